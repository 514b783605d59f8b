"""`hreg-report MULTIRUN_DIR`: a multirun's results as report.md, with figures beside it.

The report reads only what the jobs wrote (``.hydra/overrides.yaml`` and
``result.json``, which holds the history, final metrics, weight statistics and
prediction entropy); it never re-trains. Any multirun works: the
compare_regularizers study, a plain ``-m regularizer=none,l1,l2`` or an Optuna
sweep. A *configuration* is a job's overrides without its seed, so runs that
differ only by seed are grouped and summarised by mean and standard deviation.
Jobs that failed, diverged or are still running are listed and kept out of the
statistics; their curves are still drawn as far as they got.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("hreg")

REPORT_FILE = "report.md"
#: Statuses whose run reached a clean end with final weight statistics: these enter the statistics.
FINISHED = ("completed", "early_stopped")
#: Override keys that repeat a configuration rather than define one.
SEED_KEYS = ("seed", "data.seed")


class ReportError(Exception):
    """The directory cannot be reported on; the message is one line."""


@dataclass
class Run:
    """One job of the multirun: where it is, how it was launched, what it wrote (None: no result.json)."""

    name: str
    path: Path
    overrides: list[str]
    result: dict[str, Any] | None
    problem: str = ""  # why there is no usable result.json
    label: str = ""  # its configuration, set by label_runs

    @property
    def status(self) -> str:
        return self.result["status"] if self.result else "failed"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def final(self, key: str) -> float:
        """A final metric (or NaN); ``gap`` is train accuracy minus validation accuracy."""
        final = (self.result or {}).get("final") or {}
        if key == "gap":
            return final.get("train_acc", math.nan) - final.get("val_acc", math.nan)
        return final.get(key, math.nan)

    def end_state(self, key: str) -> float:
        """``entropy_mean`` or a weight statistic (near_zero_share, l1_norm, l2_norm) at the end, or NaN."""
        result = self.result or {}
        if key == "entropy_mean":
            return result.get(key, math.nan)
        return (result.get("weights") or {}).get(key, math.nan)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _job_order(name: str) -> list[Any]:
    """Natural order: job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_run(job_dir: Path) -> Run:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    name = job_dir.name
    result_file = job_dir / "result.json"
    if not result_file.exists():
        why = "no result.json: it stopped before its first evaluation (see its train.log), or has only just started"
        return Run(name, job_dir, overrides, None, why)
    try:
        return Run(name, job_dir, overrides, json.loads(result_file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return Run(name, job_dir, overrides, None, f"unreadable result.json ({error})")


def find_runs(multirun_dir: Path) -> list[Run]:
    """Every job directory (a child holding ``.hydra/overrides.yaml``) of ``multirun_dir``, in job order."""
    if not multirun_dir.is_dir():
        raise ReportError(f"{multirun_dir}: {'not a directory' if multirun_dir.exists() else 'no such directory'}")
    job_dirs = [p.parent.parent for p in multirun_dir.glob("*/.hydra/overrides.yaml")]
    if not job_dirs:
        raise ReportError(
            f"{multirun_dir}: not a multirun directory (no job directory N/.hydra/overrides.yaml in it); "
            "pass the sweep directory, e.g. multirun/DATE/TIME"
        )
    job_dirs.sort(key=lambda d: _job_order(d.name))
    return [load_run(d) for d in job_dirs]


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's configuration label; return the overrides common to every run (shown once)."""
    common = [o for o in runs[0].overrides if all(o in r.overrides for r in runs)]
    for run in runs:
        varying = [o for o in run.overrides if o not in common and _override_key(o) not in SEED_KEYS]
        run.label = " ".join(varying) or "defaults"
    return common


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by configuration label, in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


# --- formatting -------------------------------------------------------------------------------


def percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.2f}"


def number(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def mean_std(values: list[float], fmt: Callable[[float], str]) -> str:
    """``mean ± sample std`` (std only from two values on), NaNs left out."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"


def table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def describe_status(run: Run) -> str:
    """Why a run is not in the statistics, in a few words."""
    if run.result is None:
        return f"failed: {run.problem}"
    result = run.result
    text = f"{run.status} after epoch {result.get('epochs_completed', 0)}/{result.get('epochs', '?')}"
    if run.status == "running":
        written = datetime.fromtimestamp((run.path / "result.json").stat().st_mtime, timezone.utc)
        text += f" (result.json last written {written:%Y-%m-%d %H:%M:%S} UTC; still running, or killed)"
    if result.get("error"):
        text += f": {result['error']}"
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
        cells = [mean_std([value(r) for r in done], fmt) for _, value, fmt in SUMMARY_COLUMNS]
        rows.append([label, f"{len(done)}/{len(members)}", *cells])
    return table(["configuration", "runs", *(c[0] for c in SUMMARY_COLUMNS)], rows)


def runs_table(runs: list[Run], common: list[str]) -> str:
    rows = []
    for run in runs:
        result = run.result or {}
        rows.append([
            run.name,
            " ".join(o for o in run.overrides if o not in common) or "–",
            run.status,
            f"{result.get('epochs_completed', 0)}/{result.get('epochs', '?')}",
            percent(run.final("train_acc")),
            percent(run.final("val_acc")),
            percent(run.final("test_acc")),
            percent(run.final("gap")),
            number(run.final("train_loss"), 4),
            number(run.final("val_loss"), 4),
            percent(run.end_state("near_zero_share")),
            number(run.end_state("l2_norm")),
            number(run.end_state("entropy_mean")),
            number(result.get("wall_time_s", math.nan), 1),
        ])
    header = ["job", "overrides", "status", "epochs", "train acc (%)", "val acc (%)", "test acc (%)",
              "gap (pp)", "train loss", "val loss", "near-zero (%)", "L2 norm", "entropy", "time (s)"]
    return table(header, rows)


def status_section(runs: list[Run]) -> str:
    counts = Counter(run.status for run in runs)
    noun = "run" if len(runs) == 1 else "runs"
    lines = [f"{len(runs)} {noun}: " + ", ".join(f"{n} {status}" for status, n in counts.items()) + "."]
    left_out = [r for r in runs if not r.finished]
    if left_out:
        lines += ["", "Not in the statistics (curves drawn as far as they got):", ""]
        lines += [f"- job {r.name} ({r.label}): {describe_status(r)}" for r in left_out]
    return "\n".join(lines)


def write_report(multirun_dir: Path) -> Path:
    """Write report.md and its figures into ``multirun_dir``; return the report's path."""
    # Imported here: every run instantiates ReportCallback, and only a report needs matplotlib.
    from hreg import figures

    runs = find_runs(multirun_dir)
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
        "Statistics are mean ± sample standard deviation over the finished runs of each configuration.",
        "Overrides common to every run: " + (" ".join(f"`{o}`" for o in common) or "none") + ".",
        "## Runs\n\n" + status_section(runs),
        "## By configuration\n\n" + summary_table(groups),
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
    args = parser.parse_args(argv)
    try:
        path = write_report(args.multirun_dir)
    except (ReportError, OSError) as error:  # OSError: e.g. a directory we may not write into
        print(f"hreg-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(path)


class ReportCallback(Callback):
    """Hydra callback (conf/config.yaml, ``hydra.callbacks.report``): the report of a multirun at its end.

    Hydra calls it only when every job returned; after a crash, run ``hreg-report`` by hand.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            log.info("report: %s", write_report(sweep_dir))
        except (ReportError, OSError) as error:
            log.warning("no report: %s", error)
