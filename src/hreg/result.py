"""The run record: what a run is, how it went, and its ``result.json``.

Every engine (the native loop, the stacked launcher) writes the same record
through the same code: ``record`` after each evaluation, ``finish`` once at the
end, ``save`` atomically in the run directory. Readers (reports, sweeps,
``hreg-resume``) ``load`` it back and ask its ``Status`` what they need to know.

The file's schema is flat JSON: the fields below, in this order, with the
optional ones left out while unset, and the hooks' extras (``optuna_trial``,
``random_model_entropy``, ``early_stopping``, ...) at the top level beside them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from hreg.atomic import write_atomic
from hreg.errors import UserError

RESULT_FILE = "result.json"

#: The objectives a run can report to a sweeper, and which way is better.
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize"}

Metrics = dict[str, float]


class Status(str, Enum):
    """How a run stands; a ``str`` so that ``status == "completed"`` reads naturally and JSON stays plain."""

    RUNNING = "running"  # training, or killed without a chance to say so
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PRUNED = "pruned"  # stopped by an Optuna pruner
    DIVERGED = "diverged"  # the training loss blew up
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM, stopped cleanly at an epoch's end
    ABORTED = "aborted"  # a second Ctrl-C, mid-epoch
    FAILED = "failed"  # an exception, mid-epoch
    LOST = "lost"  # an Optuna trial that a crashed sweep left running

    def __str__(self) -> str:
        return self.value

    @property
    def is_over(self) -> bool:
        """Ended for good: resuming would train past its end (or diverge again)."""
        return self in (Status.COMPLETED, Status.EARLY_STOPPED, Status.PRUNED, Status.DIVERGED)

    @property
    def resumable(self) -> bool:
        """``hreg-resume`` may continue it from its last checkpoint."""
        return not self.is_over

    @property
    def clean_end(self) -> bool:
        """It stopped at an epoch boundary worth a final checkpoint and final weight statistics."""
        return self in (Status.COMPLETED, Status.INTERRUPTED, Status.EARLY_STOPPED)

    @property
    def finished(self) -> bool:
        """It trained to a planned end: its final metrics enter a report's statistics."""
        return self in (Status.COMPLETED, Status.EARLY_STOPPED)

    @property
    def trial_state(self) -> str:
        """The name of the Optuna ``TrialState`` its trial ends in."""
        if self == Status.PRUNED:
            return "PRUNED"
        return "COMPLETE" if self.finished else "FAIL"


class ResultError(UserError):
    """A result file is missing, unreadable or not shaped like one."""


def better(objective: str, metrics: Metrics, best: Metrics | None) -> bool:
    """Whether ``metrics`` beats ``best`` on ``objective`` (anything beats nothing; NaN beats nothing else)."""
    if best is None:
        return True
    new, old = metrics[objective], best[objective]
    if math.isnan(new):
        return False
    if math.isnan(old):
        return True
    return new > old if OBJECTIVES[objective] == "maximize" else new < old


@dataclass
class RunResult:
    """The record of one run, as ``result.json`` holds it."""

    objective: str
    config: dict[str, Any]
    epochs: int
    epochs_completed: int = 0
    history: list[Metrics] = field(default_factory=list)
    best: Metrics | None = None
    final: Metrics | None = None
    status: Status = Status.RUNNING
    device: str = "cpu"
    wall_time_s: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    resumed_at_epoch: list[int] | None = None
    weights: dict[str, float] | None = None
    entropy_mean: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    # --- writing ---------------------------------------------------------------------------

    def record(self, metrics: Metrics) -> bool:
        """Add an evaluation; returns whether it is the best so far on the objective."""
        self.history.append(metrics)
        self.final = metrics
        improved = better(self.objective, metrics, self.best)
        if improved:
            self.best = metrics
        return improved

    def finish(self, status: Status, error: str | None = None) -> Status:
        self.status = Status(status)
        self.error = error
        return self.status

    def set_extra(self, key: str, value: Any) -> None:
        """A hook's own entry in the result file (the one way hooks add to the record)."""
        if key in _FIELDS:
            raise KeyError(f"{key} is a field of the run record, not an extra")
        self.extras[key] = value

    def resumed(self, epoch: int) -> None:
        """Continue from a checkpoint at ``epoch``: running again, and the earlier stop's reason forgotten."""
        self.resumed_at_epoch = [*(self.resumed_at_epoch or []), epoch]
        self.status, self.error, self.exit_code = Status.RUNNING, None, None

    # --- reading ---------------------------------------------------------------------------

    def objective_value(self) -> float:
        """The number a sweeper optimises: the final evaluation's objective (NaN when diverged or never evaluated)."""
        if self.status == Status.DIVERGED or not self.final:
            return math.nan  # never a sweeper's best, whatever its last good evaluation said
        return self.final[self.objective]

    def summary(self, run_dir: Path) -> str:
        final, best = self.final or {}, self.best or {}
        return (
            f"{self.status}: best val acc {best.get('val_acc', math.nan):.4f} (epoch {best.get('epoch', '-')}), "
            f"final val acc {final.get('val_acc', math.nan):.4f}, test acc {final.get('test_acc', math.nan):.4f}, "
            f"{self.wall_time_s:.1f}s, run dir {run_dir}"
        )

    # --- the file --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of result.json: fields in order, unset optional ones left out, extras after."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extras":
                out.update(value)
            elif f.name == "status":
                out["status"] = value.value
            elif value is not None or f.name in ("best", "final"):
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "result") -> RunResult:
        """The record back from its JSON object; ResultError (one line) for anything not shaped like one."""
        if not isinstance(data, dict):
            raise ResultError(f"{source}: not a run record (a JSON {type(data).__name__}, not an object)")
        missing = [name for name in ("objective", "config", "epochs", "status") if name not in data]
        if missing:
            raise ResultError(f"{source}: not a run record (no {', '.join(missing)})")
        known = {f.name for f in fields(cls)} - {"extras"}
        try:
            result = cls(
                **{k: v for k, v in data.items() if k in known},
                extras={k: v for k, v in data.items() if k not in known},
            )
            result.status = Status(result.status)
        except (TypeError, ValueError) as error:
            raise ResultError(f"{source}: not a run record ({error})") from None
        result._check_shape(source)
        return result

    def _check_shape(self, source: str) -> None:
        def metrics_ok(m: Any) -> bool:
            if not isinstance(m, dict) or not isinstance(m.get("epoch"), int):
                return False
            return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())

        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"objective {self.objective!r}")
        if not isinstance(self.history, list) or not all(metrics_ok(m) for m in self.history):
            problems.append("history is not a list of metrics with their epoch")
        for name in ("best", "final"):
            value = getattr(self, name)
            if value is not None and not (metrics_ok(value) and self.objective in value):
                problems.append(f"{name} is not a set of metrics with {self.objective}")
        if not isinstance(self.epochs_completed, int) or not isinstance(self.epochs, int):
            problems.append("epochs are not integers")
        if problems:
            raise ResultError(f"{source}: not a run record ({'; '.join(problems)})")

    def to_json(self) -> str:
        """result.json's text: the record's JSON object indented by 2, NaN allowed (a diverged run's metrics).

        Encoded whole at every save: little beside a run's training (``benchmarks/bench_bookkeeping.py``
        measures it), so no cache of encoded text.
        """
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def save(self, run_dir: Path) -> None:
        """Write ``RUN_DIR/result.json`` atomically: a reader never sees half a file, a crash never leaves one."""
        write_atomic(run_dir / RESULT_FILE, self.to_json().encode())

    @classmethod
    def load(cls, run_dir: Path) -> RunResult:
        path = run_dir / RESULT_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ResultError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ResultError(f"{path}: unreadable ({error})") from None
        return cls.from_dict(data, str(path))


_FIELDS = {f.name for f in fields(RunResult)}
