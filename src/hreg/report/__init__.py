"""`hreg-report MULTIRUN_DIR`: a multirun's results as report.md, with figures beside it.

The report reads only what the jobs wrote (``.hydra/overrides.yaml`` and
``result.json``, which holds the history, final metrics, weight statistics and
prediction entropy); it never re-trains. Any multirun works: the
compare_regularizers study, a plain ``-m regularizer=none,l1,l2`` or an Optuna
sweep. Runs that differ only by seed form one configuration (runs.py),
summarised by mean and 95% confidence interval, and compared with a baseline
seed by seed (compare.py). Jobs that failed, diverged or are
still running are listed and kept out of the statistics; their curves are still
drawn as far as they got.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hreg.cli import exit_on_error
from hreg.report.runs import ReportError, Run, find_runs, group_runs, label_runs
from hreg.report import compare
from hreg.report.tables import mean_interval, number, percent, table
from hreg.result import RESULT_FILE

log = logging.getLogger("hreg")

REPORT_FILE = "report.md"


def describe_status(run: Run) -> str:
    """Why a run is not in the statistics, in a few words."""
    if run.result is None:
        return f"failed: {run.problem}"
    result = run.result
    text = f"{run.status} after epoch {result.epochs_completed}/{result.epochs}"
    if run.status == "running":
        written = datetime.fromtimestamp((run.path / RESULT_FILE).stat().st_mtime, timezone.utc)
        text += f" (result.json last written {written:%Y-%m-%d %H:%M:%S} UTC; still running, or killed)"
    elif result.status.finished and result.final is None:
        text += " without any evaluation"
    if result.error:
        text += f": {result.error}"
    return text


# --- the report ---------------------------------------------------------------------------------

#: Columns of the per-configuration table: header, how one run gives the value, how it is written.
SUMMARY_COLUMNS: list[tuple[str, Callable[[Run], float], Callable[[float], str]]] = [
    ("test acc (%)", lambda r: r.final("test_acc"), percent),
    ("train−val gap (pp)", lambda r: r.final("gap"), percent),
    ("val acc (%)", lambda r: r.final("val_acc"), percent),
    ("val loss", lambda r: r.final("val_loss"), number),
    ("near-zero weights (%)", lambda r: r.end_state("near_zero_share"), percent),
    ("L2 norm", lambda r: r.end_state("l2_norm"), number),
    ("entropy (nats)", lambda r: r.end_state("entropy_mean"), number),
]


def summary_table(groups: dict[str, list[Run]]) -> str:
    rows = []
    for label, members in groups.items():
        done = [r for r in members if r.finished]
        cells = [mean_interval([value(r) for r in done], fmt) for _, value, fmt in SUMMARY_COLUMNS]
        rows.append([label, f"{len(done)}/{len(members)}", *cells])
    return table(["configuration", "runs", *(c[0] for c in SUMMARY_COLUMNS)], rows)


def runs_table(runs: list[Run], common: list[str]) -> str:
    rows = []
    for run in runs:
        result = run.result
        rows.append([
            run.name,
            " ".join(o for o in run.overrides if o not in common) or "–",
            run.status,
            f"{result.epochs_completed}/{result.epochs}" if result else "0/?",
            percent(run.final("train_acc")),
            percent(run.final("val_acc")),
            percent(run.final("test_acc")),
            percent(run.final("gap")),
            number(run.final("train_loss"), 4),
            number(run.final("val_loss"), 4),
            percent(run.end_state("near_zero_share")),
            number(run.end_state("l2_norm")),
            number(run.end_state("entropy_mean")),
            number(result.wall_time_s if result else math.nan, 1),
        ])
    header = ["job", "overrides", "status", "epochs", "train acc (%)", "val acc (%)", "test acc (%)",
              "gap (pp)", "train loss", "val loss", "near-zero (%)", "L2 norm", "entropy", "time (s)"]
    return table(header, rows)


def status_section(runs: list[Run]) -> str:
    if not runs:
        return "0 runs: no job ran (an Optuna sweep whose study already held every trial, or n_trials=0)."
    counts = Counter(run.status for run in runs)
    noun = "run" if len(runs) == 1 else "runs"
    lines = [f"{len(runs)} {noun}: " + ", ".join(f"{n} {status}" for status, n in counts.items()) + "."]
    if not any(run.finished for run in runs):
        lines.append("No run finished, so there are no statistics.")
    left_out = [r for r in runs if not r.finished]
    if left_out:
        lines += ["", "Not in the statistics (curves drawn as far as they got):", ""]
        lines += [f"- job {r.name} ({r.label}): {describe_status(r)}" for r in left_out]
    return "\n".join(lines)


def write_report(multirun_dir: Path, allow_empty: bool = False, baseline: str | None = None) -> Path:
    """Write report.md and its figures into ``multirun_dir``; return the report's path.

    ``allow_empty``: a sweep directory with no job yet still gets a report that says so. ``baseline``: the
    configuration the others are compared with (default: compare.find_baseline's).
    """
    # Imported here: every run instantiates ReportCallback, and only a report needs matplotlib.
    from hreg.report import figures

    runs = find_runs(multirun_dir, allow_empty)
    common = label_runs(runs)
    groups = group_runs(runs)
    finished = {label: [r for r in members if r.finished] for label, members in groups.items()}
    finished = {label: members for label, members in finished.items() if members}
    drawn = figures.draw_all(groups, finished, multirun_dir)
    parts = [
        f"# Report: {multirun_dir.resolve()}",
        "Written by `hreg-report` from each job's result.json (final evaluation). The gap is final "
        "train accuracy minus validation accuracy, in percentage points; near-zero weights are Linear "
        "weights with |w| < 1e-3; entropy is the mean prediction entropy (nats) on 10000 validation images. "
        "Statistics are the mean [95% Student t confidence interval] over the finished runs of each "
        "configuration.",
        "Overrides common to every run: " + (" ".join(f"`{o}`" for o in common) or "none") + ".",
        "## Runs\n\n" + status_section(runs),
        "## By configuration\n\n" + summary_table(groups),
        "## Which differences are real\n\n" + compare.section(finished, baseline),
        "## Figures\n\n"
        + ("\n\n".join(f"![{title}]({name})" for name, title in drawn) or "None: no run has evaluated yet."),
        "## Every run\n\n" + runs_table(runs, common),
    ]
    path = multirun_dir / REPORT_FILE
    path.write_text("\n\n".join(parts) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="hreg-report", description="Write report.md and figures into a multirun directory, from its runs' result files."
    )
    parser.add_argument("multirun_dir", type=Path, help="e.g. multirun/2026-01-31/12-00-00")
    parser.add_argument("--baseline", help="the configuration to compare the others with, as report.md labels it "
                                           "(default: the one whose overrides are all =none, e.g. variant=none)")
    args = parser.parse_args(argv)
    with exit_on_error("hreg-report"):
        try:
            path = write_report(args.multirun_dir, baseline=args.baseline)
        except OSError as error:  # e.g. a directory we may not write into
            raise ReportError(str(error)) from None
    print(path)


class ReportCallback(Callback):
    """Hydra callback (conf/config.yaml, ``hydra.callbacks.report``): the report of a multirun at its end.

    Hydra calls it only when every job returned; after a crash, run ``hreg-report`` by hand.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            baseline = OmegaConf.select(config, "report.baseline", default=None)
            log.info("report: %s", write_report(sweep_dir, allow_empty=True, baseline=baseline))
        except (ReportError, OSError) as error:
            log.warning("no report: %s", error)
