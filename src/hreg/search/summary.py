"""The summary of an Optuna sweep: every trial in a table (CSV and Markdown, best first), what the
search learned (learned.py) and plots.

Written at the end of each sweep; ``hreg-study SWEEP_DIR`` rewrites it at any
time (during a sweep, or after one that crashed).

Everything is read from the study database, where each job recorded its final
validation and test metrics (trial.py). Trials are ranked by the
validation objective only: completed ones first, best first, then pruned, then
failed. Test metrics are shown for every trial and never used to rank.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from optuna.distributions import CategoricalDistribution  # noqa: E402

from hreg.cli import exit_on_error  # noqa: E402
from hreg.errors import UserError  # noqa: E402
from hreg.report.tables import table  # noqa: E402
from hreg.search import learned  # noqa: E402
from hreg.search.history import plot_history  # noqa: E402
from hreg.search.study import DATABASE, EPOCHS_ATTR, FINAL_ATTR, RUN_DIR_ATTR, STATUS_ATTR, database_url, open_storage  # noqa: E402

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
HISTORY_PNG = "optimization_history.png"
PARALLEL_PNG = "parallel_coordinates.png"
METRICS = ("val_acc", "val_loss", "test_acc", "test_loss")
STATE_RANK = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}


def _rank(study: optuna.Study, trial: FrozenTrial) -> tuple[int, float, int]:
    value = trial.value if trial.value is not None and math.isfinite(trial.value) else math.inf
    if study.direction == StudyDirection.MAXIMIZE and value != math.inf:
        value = -value
    return STATE_RANK.get(trial.state, len(STATE_RANK)), value, trial.number


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one row per trial, best first); a parameter a trial did not sample is None."""
    params = sorted({name for trial in study.trials for name in trial.params})
    columns = ["trial", "state", "status", "value", *params, *METRICS, "epochs", "duration_s", "run_dir"]
    rows = []
    for trial in sorted(study.trials, key=lambda t: _rank(study, t)):
        final = trial.system_attrs.get(FINAL_ATTR, {})
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "status": trial.system_attrs.get(STATUS_ATTR),  # the run's: completed, pruned, diverged, ...
                "value": trial.value,
                **{name: trial.params.get(name) for name in params},
                **{name: final.get(name) for name in METRICS},
                "epochs": trial.system_attrs.get(EPOCHS_ATTR),
                "duration_s": _duration(trial),
                "run_dir": trial.system_attrs.get(RUN_DIR_ATTR),
            }
        )
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_tables(columns: list[str], rows: list[dict[str, Any]], out_dir: Path, learned: str = "") -> list[Path]:
    """summary.csv and summary.md (the trial table, then ``learned``); the Markdown says so first when no
    trial completed."""
    csv_path, md_path = out_dir / SUMMARY_CSV, out_dir / SUMMARY_MD
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    markdown = table(columns, [[_cell(row[c]) for c in columns] for row in rows]) + "\n"
    if not any(row["state"] == "complete" for row in rows):
        markdown = f"No trial completed ({len(rows)} trials), so there are no best parameters.\n\n" + markdown
    md_path.write_text(markdown + (f"\n{learned}\n" if learned else ""))
    return [csv_path, md_path]


def _axis_positions(trials: list[FrozenTrial], name: str) -> list[float]:
    """A parameter's values mapped onto [0, 1] (log scale, or choice index); NaN where not sampled."""
    distribution = next(t.distributions[name] for t in trials if name in t.distributions)
    if isinstance(distribution, CategoricalDistribution):
        choices = list(distribution.choices)
        top = max(len(choices) - 1, 1)
        return [choices.index(t.params[name]) / top if name in t.params else math.nan for t in trials]
    low, high = distribution.low, distribution.high
    scale = math.log if distribution.log else float
    span = (scale(high) - scale(low)) or 1.0
    return [(scale(t.params[name]) - scale(low)) / span if name in t.params else math.nan for t in trials]


def plot_parallel_coordinates(study: optuna.Study, path: Path) -> None:
    """One line per completed trial across its parameters, coloured by the objective.

    Drawn here so that a parameter a trial did not sample leaves a gap in its line.
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({name for t in trials for name in t.params})
    columns = [_axis_positions(trials, name) for name in names]
    values = [t.value for t in trials]
    norm = plt.Normalize(min(values), max(values))
    cmap = plt.get_cmap("viridis" if study.direction == StudyDirection.MAXIMIZE else "viridis_r")
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    for i, value in enumerate(values):
        ax.plot(range(len(names)), [column[i] for column in columns], color=cmap(norm(value)), alpha=0.8, marker="o")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title(f"Parallel coordinates of {len(trials)} completed trials")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="objective")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """The history of every trial that reported (history.py), and the parallel coordinates of completed ones."""
    paths = [out_dir / HISTORY_PNG] if plot_history(study, out_dir / HISTORY_PNG) else []
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        plot_parallel_coordinates(study, out_dir / PARALLEL_PNG)
        paths.append(out_dir / PARALLEL_PNG)
    return paths


def write_summary(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write the trial table and the plots into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_tables(*trial_rows(study), out_dir, learned.section(study)) + write_plots(study, out_dir)


class StudyError(UserError):
    """No such study, or no way to tell which one."""


def load_study(sweep_dir: Path, storage: str | None, name: str | None) -> optuna.Study:
    """The study of a sweep directory (its optuna.db unless ``storage``), by ``name`` or the only one."""
    if not storage and not (sweep_dir / DATABASE).is_file():
        raise StudyError(f"no {DATABASE} in {sweep_dir}")
    url = storage or database_url(sweep_dir)
    opened = open_storage(url)
    names = optuna.get_all_study_names(opened)
    if name is None and len(names) != 1:
        raise StudyError(f"{len(names)} studies in {url} ({', '.join(names)}): pass --study NAME")
    if name is not None and name not in names:
        raise StudyError(f"no study {name!r} in {url} (it has: {', '.join(names)})")
    return optuna.load_study(study_name=name or names[0], storage=opened)


def main(argv: list[str] | None = None) -> None:
    """``hreg-study SWEEP_DIR [--storage URL] [--study NAME]``: (re)write the summary of a sweep."""
    parser = argparse.ArgumentParser(prog="hreg-study", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory, e.g. multirun/optuna/hreg")
    parser.add_argument("--storage", help=f"database URL (default: sqlite:///SWEEP_DIR/{DATABASE})")
    parser.add_argument("--study", help="study name (default: the only study in the database)")
    args = parser.parse_args(argv)
    with exit_on_error("hreg-study"):
        study = load_study(args.sweep_dir, args.storage, args.study)
        for path in write_summary(study, args.sweep_dir):
            print(path)
