"""The jobs of a multirun, as the report sees them: where each is, how it was launched, what it wrote.

A *configuration* is a job's overrides without its seed, so runs that differ
only by seed are grouped and summarised together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hreg.errors import UserError
from hreg.result import RESULT_FILE, ResultError, RunResult

#: Override keys that repeat a configuration rather than define one.
SEED_KEYS = ("seed", "data.seed")


class ReportError(UserError):
    """The directory cannot be reported on; the message is one line."""


@dataclass
class Run:
    """One job of the multirun; ``result`` is None when it left no usable result.json (``problem`` says why)."""

    name: str
    path: Path
    overrides: list[str]
    result: RunResult | None
    problem: str = ""
    label: str = ""  # its configuration, set by label_runs

    @property
    def status(self) -> str:
        return self.result.status.value if self.result else "failed"

    @property
    def finished(self) -> bool:
        """It trained to a planned end and has final metrics: it enters the statistics."""
        return self.result is not None and self.result.status.finished and self.result.final is not None

    def final(self, key: str) -> float:
        """A final metric (or NaN); ``gap`` is train accuracy minus validation accuracy."""
        final = (self.result.final if self.result else None) or {}
        if key == "gap":
            return final.get("train_acc", math.nan) - final.get("val_acc", math.nan)
        return final.get(key, math.nan)

    def end_state(self, key: str) -> float:
        """``entropy_mean`` or a weight statistic (near_zero_share, l1_norm, l2_norm) at the end, or NaN."""
        if self.result is None:
            return math.nan
        if key == "entropy_mean":
            return math.nan if self.result.entropy_mean is None else self.result.entropy_mean
        return (self.result.weights or {}).get(key, math.nan)

    @property
    def seed(self) -> str:
        """Which repetition this run is, as its seed overrides say (``seed=3``; empty: the default seed).
        Runs of two configurations with the same ``seed`` start from the same weights on the same split."""
        return " ".join(sorted(o for o in self.overrides if _override_key(o) in SEED_KEYS))

    def extra(self, key: str) -> Any:
        return self.result.extras.get(key) if self.result else None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _job_order(name: str) -> list[Any]:
    """Natural order: job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_run(job_dir: Path) -> Run:
    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        overrides = []
    if not isinstance(overrides, list):
        overrides = []
    overrides = [str(o) for o in overrides]
    name = job_dir.name
    if not (job_dir / RESULT_FILE).exists():
        why = "no result.json: it stopped before its first evaluation (see its train.log), or has only just started"
        return Run(name, job_dir, overrides, None, why)
    try:
        return Run(name, job_dir, overrides, RunResult.load(job_dir))
    except ResultError as error:
        return Run(name, job_dir, overrides, None, f"unusable result.json ({error})")


def find_runs(multirun_dir: Path, allow_empty: bool = False) -> list[Run]:
    """Every job directory (a child holding ``.hydra/overrides.yaml``) of ``multirun_dir``, in job order."""
    if not multirun_dir.is_dir():
        raise ReportError(f"{multirun_dir}: {'not a directory' if multirun_dir.exists() else 'no such directory'}")
    job_dirs = [p.parent.parent for p in multirun_dir.glob("*/.hydra/overrides.yaml")]
    if not job_dirs and not allow_empty:
        raise ReportError(
            f"{multirun_dir}: not a multirun directory (no job directory N/.hydra/overrides.yaml in it); "
            "pass the sweep directory, e.g. multirun/DATE/TIME"
        )
    job_dirs.sort(key=lambda d: _job_order(d.name))
    return [load_run(d) for d in job_dirs]


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's configuration label; return the overrides common to every run (shown once)."""
    if not runs:
        return []
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
