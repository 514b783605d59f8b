"""One lifecycle for every engine: the same fault ends a native, a Lightning and a stacked run alike.

Each fault is real: a hook that raises, a SIGINT sent to this process at an
epoch, a penalty that makes the loss infinite, and an Optuna pruner (a real
study in SQLite) that prunes at the second report. The run records agree in
status, exit code, epochs completed and the kind of error.
"""

from __future__ import annotations

import os
import signal

import optuna
import pytest
from optuna.storages import RDBStorage

from hreg.build import build_context, build_hooks
from hreg.engines import fit
from hreg.engines.stacked.stack import Member, fit_stack
from hreg.hooks import Hook
from hreg.schedule import lr_factor
from hreg.search.outage import Outage
from hreg.search.trial import TrialReporter
from hreg.stops import Interrupted
from tests.conftest import QUICK, compose_config, read_result

BASE = (QUICK, "monitor=none", "checkpoint.every=0", "data.train_fraction=0.01")
ENGINES = ("native", "lightning", "stacked")


class Fault(Hook):
    """At the end of epoch ``at``: raise an error, or send this process a SIGINT."""

    def __init__(self, kind: str, at: int = 2) -> None:
        self.kind, self.at = kind, at

    def on_epoch_end(self, ctx, epoch, stats, metrics, improved) -> None:
        if epoch != self.at:
            return
        if self.kind == "raises":
            raise RuntimeError("a hook's bug")
        os.kill(os.getpid(), signal.SIGINT)  # deferred: the run stops cleanly after this epoch


def pruning_reporter(tmp_path, name: str) -> TrialReporter:
    """A trial of a real study whose pruner prunes any trial at its second report (val_acc < 1)."""
    storage = RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    pruner = optuna.pruners.ThresholdPruner(lower=1.0, n_warmup_steps=2)
    study = optuna.create_study(study_name=name, storage=storage, pruner=pruner)
    trial = study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), trial.number)
    return TrialReporter(study, storage, trial_id, trial.number, "val_acc", Outage(600, "it trains on"))


def run_with(engine: str, fault: str, tmp_path) -> dict:
    """The fault in a run of ``engine``; returns its record as saved (what sweeps and reports read)."""
    overrides = list(BASE)
    if engine == "lightning":
        overrides += ["engine=lightning", "+engine.trainer.enable_progress_bar=false"]
    if fault == "infinite loss":
        overrides += ["regularizer=l2", "regularizer.lam=1e38"]
    run_dir = tmp_path / engine
    ctx = build_context(compose_config(*overrides), run_dir)
    hooks = build_hooks(ctx)
    if fault in ("raises", "sigint"):
        hooks.append(Fault(fault))
    if fault == "pruned":
        hooks.append(pruning_reporter(tmp_path, engine))
    raised: type[BaseException] | None = None
    try:
        if engine == "stacked":
            member = Member("m", ctx, hooks)
            fit_stack([member], seed=0)
            if member.failure is not None:
                raise member.failure
        else:
            fit(ctx, hooks)
    except (RuntimeError, Interrupted) as error:
        raised = type(error)
    record = read_result(run_dir)
    record["raised"] = raised
    return record


@pytest.mark.parametrize("fault", ["raises", "sigint", "infinite loss", "pruned"])
def test_the_same_fault_ends_every_engine_with_the_same_status_exit_code_and_record(tmp_path, fault):
    records = {engine: run_with(engine, fault, tmp_path) for engine in ENGINES}
    expected = {
        "raises": ("failed", 1, 2, RuntimeError),
        "sigint": ("interrupted", 128 + signal.SIGINT, 2, Interrupted),
        "infinite loss": ("diverged", None, 1, None),
        "pruned": ("pruned", None, 2, None),
    }[fault]
    for engine, record in records.items():
        got = (record["status"], record.get("exit_code"), record["epochs_completed"], record["raised"])
        assert got == expected, engine
    errors = {engine: record.get("error", "") for engine, record in records.items()}
    first = errors["native"].split(":")[0].split("(")[0]
    assert first and all(e.startswith(first) for e in errors.values()), errors


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_steps_each_epoch_at_the_schedules_learning_rate(tmp_path, engine):
    """The last epoch's rate is in the run's optimizer (a stack's member: as exported for its checkpoint),
    with ``initial_lr`` for a resumed run to go on from."""
    overrides = [*BASE, "epochs=4", "lr_schedule=cosine", "optimizer.lr=0.01"]
    ctx = build_context(compose_config(*overrides, "engine=lightning" if engine == "lightning" else "engine=native"),
                        tmp_path)
    if engine == "stacked":
        fit_stack([Member("m", ctx, build_hooks(ctx))], seed=0)
    else:
        fit(ctx, build_hooks(ctx))
    assert ctx.result.status == "completed"
    (group,) = ctx.optimizer.param_groups
    assert group["initial_lr"] == 0.01
    assert group["lr"] == pytest.approx(0.01 * lr_factor("cosine", 4, 4)) and group["lr"] < 0.01 * 0.2
