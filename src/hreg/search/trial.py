"""The job's side of a search: report to the trial the sweeper gave it, stop when pruned.

The sweep loop (loop.py) asks a trial and launches a job with the trial's
overrides and ``hydra.sweeper.trial=NUMBER``; it tells the trial when the job
ends. A job cannot finish its own trial (the loop's later tell would raise), so
the job reports each evaluation, records its run's status and final metrics on
the trial, and the loop tells the state that status calls for (PRUNED for a
pruned run). A diverged run returns NaN and its job fails (callback.py), so its
trial fails. Everything goes through the storage's public methods.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from hreg.hooks import EpochStats, Hook, RunContext
from hreg.result import Status
from hreg.search.pool import on_pool
from hreg.search.study import (
    EPOCHS_ATTR, FINAL_ATTR, RUN_DIR_ATTR, STATUS_ATTR, is_optuna, open_storage, storage_url,
)
from hreg.stops import Lost, Pruned

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.storages import BaseStorage
    from optuna.study import Study

# optuna is imported where it is used: single runs never pay for it.


def pruner_key(on_stacks: bool) -> str:
    """The ``search`` key of the pruner a sweep's trials use: ``stacked_pruner`` on a pool, else ``pruner``."""
    return "stacked_pruner" if on_stacks else "pruner"


def build_pruner(search: DictConfig, on_stacks: bool = False) -> BasePruner:
    """The pruner at ``search.<pruner_key>`` instantiated; no pruning when null."""
    import optuna

    node = search.get(pruner_key(on_stacks))
    return instantiate(node) if node else optuna.pruners.NopPruner()


class TrialReporter(Hook):
    """Reports each evaluation to the job's Optuna trial and stops the run when the pruner says so.

    It reports in ``on_epoch_end`` and asks the pruner in ``judge``: the members
    of a stack have all reported an epoch before any of them is judged on it.
    """

    def __init__(self, study: Study, storage: BaseStorage, trial_id: int, number: int, objective: str) -> None:
        self.study = study
        self.storage = storage
        self.trial_id = trial_id
        self.number = number
        self.objective = objective
        self.reported: float | None = None  # the value reported at this epoch, until judged

    @classmethod
    def connect(cls, ctx: RunContext) -> TrialReporter:
        """Connect to the trial the sweeper gave this job, and record the run's directory on it.

        A job started again in its own directory (a requeued submitit job) connects again. A job whose
        trial has ended already (a restarted sweeper failed it as lost) connects all the same: its first
        report is refused, and the run stops as lost.
        """
        import optuna

        hydra = ctx.hydra
        sweeper = hydra.sweeper
        pruner = build_pruner(ctx.cfg.search, on_pool(hydra))
        storage = open_storage(storage_url(sweeper.storage))
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
        number = int(sweeper.trial)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(sweeper.study_name), number)
        reporter = cls(study, storage, trial_id, number, ctx.cfg.objective)
        if reporter._finished():
            ctx.log.warning("optuna: trial %d of study %s has ended (%s) before this job reported to it", number,
                            study.study_name, storage.get_trial(trial_id).state.name.lower())
        else:
            storage.set_trial_system_attr(trial_id, RUN_DIR_ATTR, hydra.runtime.output_dir)
            ctx.log.info("optuna: trial %d of study %s (pruner %s)", number, study.study_name, type(pruner).__name__)
        return reporter

    def _finished(self) -> bool:
        """Whether the trial has ended (read from the database)."""
        return self.storage.get_trial(self.trial_id).state.is_finished()

    def _record(self, key: str, value: Any) -> None:
        self.storage.set_trial_system_attr(self.trial_id, key, value)

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        ctx.result.set_extra("optuna_trial", self.number)

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        self.reported = None
        if metrics is None or not math.isfinite(metrics[self.objective]):
            return
        try:
            self.storage.set_trial_intermediate_value(self.trial_id, epoch, metrics[self.objective])
        except RuntimeError:  # optuna refuses reports to a finished trial
            if not self._finished():
                raise
            raise Lost(
                f"trial {self.number} was ended by another process (a restarted sweeper marks the trials "
                "it finds running as lost and runs others in their place): this run stops"
            ) from None
        self.reported = metrics[self.objective]

    def judge(self, ctx: RunContext, epoch: int) -> None:
        # At the last epoch the run is over: it completes, whatever the pruner would say.
        if self.reported is None or epoch >= ctx.cfg.epochs:
            return
        pruner = self.study.pruner
        if pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
            raise Pruned(
                f"trial {self.number}: {self.objective} {self.reported:.4f} at epoch {epoch} "
                f"is worse than the pruner ({type(pruner).__name__}) allows"
            )

    def on_end(self, ctx: RunContext) -> None:
        result = ctx.result
        if result.status == Status.LOST:  # the trial is finished: nothing more can be recorded on it
            return
        final = result.final or {}
        try:
            self._record(FINAL_ATTR, {k: v for k, v in final.items() if k.startswith(("val_", "test_"))})
            self._record(EPOCHS_ATTR, result.epochs_completed)
            self._record(STATUS_ATTR, result.status.value)
        except RuntimeError:  # optuna refuses attributes on a finished trial: a restarted sweeper failed it meanwhile
            if not self._finished():
                raise
            ctx.log.warning("optuna: trial %d ended before this run could record its end on it", self.number)
            return
        if result.status == Status.INTERRUPTED:
            ctx.log.warning(
                "optuna: the same sweep command resumes study %s; trial %d %s",
                self.study.study_name, self.number,
                "goes on from its checkpoint" if on_pool(ctx.hydra) else "will be run again",
            )


def trial_hooks(ctx: RunContext) -> list[Hook]:
    """The reporter hook when this run is a job of an Optuna sweep that gave it a trial; else nothing."""
    hydra = ctx.hydra
    if hydra is None or hydra.mode != RunMode.MULTIRUN or not is_optuna(hydra) or hydra.sweeper.get("trial") is None:
        return []
    return [TrialReporter.connect(ctx)]
