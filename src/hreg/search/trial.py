"""The job's side of a search: find its trial in the study database, report to it, stop when pruned.

The sweep loop (loop.py) asks a trial, launches a job with the trial's
overrides and tells the trial when the job ends. A job cannot finish its own
trial (the loop's later tell would raise), so the job reports each evaluation,
records its run's status and final metrics on the trial, and the loop tells
the state that status calls for (PRUNED for a pruned run). A diverged run
returns NaN and its job fails (callback.py), so its trial fails.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hreg.hooks import EpochStats, Hook, RunContext
from hreg.result import Status
from hreg.search.study import (
    EPOCHS_ATTR, FINAL_ATTR, JOB_ATTR, OVERRIDES_ATTR, RUN_DIR_ATTR, STATUS_ATTR, is_optuna, job_key, storage_url,
)
from hreg.stops import Lost, Pruned

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.trial import Trial

# optuna is imported where it is used: single runs never pay for it.


def stacked(hydra: DictConfig) -> bool:
    """Whether a sweep's trials train on stacks (``hydra/launcher=stacked``: the pool)."""
    return "stacked_launcher" in str(OmegaConf.select(hydra, "launcher._target_", default=""))


def pruner_key(on_stacks: bool) -> str:
    """The ``search`` key of the pruner a sweep's trials use: ``stacked_pruner`` on stacks, else ``pruner``."""
    return "stacked_pruner" if on_stacks else "pruner"


def build_pruner(search: DictConfig, on_stacks: bool = False):
    """The pruner at ``search.<pruner_key>`` instantiated; no pruning when null."""
    import optuna

    node = search.get(pruner_key(on_stacks))
    return instantiate(node) if node else optuna.pruners.NopPruner()


class TrialReporter(Hook):
    """Reports each evaluation to the job's Optuna trial and stops the run when the pruner says so.

    It reports in ``on_epoch_end`` and asks the pruner in ``judge``: the members
    of a stack have all reported an epoch before any of them is judged on it.
    """

    def __init__(self, trial: Trial, trial_id: int, storage: BaseStorage, objective: str) -> None:
        self.trial = trial
        self.trial_id = trial_id
        self.storage = storage
        self.objective = objective
        self.reported: float | None = None  # the value reported at this epoch, until judged

    @classmethod
    def connect(cls, ctx: RunContext) -> TrialReporter | None:
        """Reconnect to the sweep's study and claim the trial launched as this job (overrides, sweeper and number).

        A job started again in its own directory (a requeued submitit job) claims its trial again. A job whose
        trial has ended already (a restarted sweeper failed it as lost) gets a reporter all the same: its first
        report is refused, and the run stops as lost.
        """
        import optuna
        from optuna.storages import RDBStorage
        from optuna.trial import Trial, TrialState

        hydra = ctx.hydra
        sweeper = hydra.sweeper
        pruner = build_pruner(ctx.cfg.search, stacked(hydra))
        storage = RDBStorage(storage_url(sweeper.storage))
        study = optuna.load_study(sweeper.study_name, storage=storage, pruner=pruner)
        study_id = storage.get_study_id_from_name(sweeper.study_name)
        overrides, here, job = sorted(hydra.overrides.task), hydra.runtime.output_dir, job_key(hydra, hydra.job.num)
        for frozen in study.get_trials(deepcopy=False):
            attrs = frozen.system_attrs
            if attrs.get(OVERRIDES_ATTR) != overrides or attrs.get(RUN_DIR_ATTR, here) != here:
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            trial = Trial(study, trial_id)
            if frozen.state == TrialState.RUNNING and attrs.get(JOB_ATTR, job) == job:
                trial.set_system_attr(RUN_DIR_ATTR, here)
                ctx.log.info("optuna: trial %d of study %s (pruner %s)", trial.number, study.study_name, type(pruner).__name__)
                return cls(trial, trial_id, storage, ctx.cfg.objective)
            if attrs.get(JOB_ATTR) == job:  # this very job's trial (the sweeper id makes it unique), ended
                ctx.log.warning("optuna: trial %d of study %s has ended (%s) before this job reported to it",
                                trial.number, study.study_name, frozen.state.name.lower())
                return cls(trial, trial_id, storage, ctx.cfg.objective)
        ctx.log.warning("optuna: no running trial of study %s matches this job; it reports nothing", study.study_name)
        return None

    def _finished(self) -> bool:
        """Whether the trial has ended (read from the database, not this process's cache)."""
        return self.storage.get_trial(self.trial_id).state.is_finished()

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        ctx.result.set_extra("optuna_trial", self.trial.number)

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        self.reported = None
        if metrics is None or not math.isfinite(metrics[self.objective]):
            return
        try:
            self.trial.report(metrics[self.objective], epoch)
        except RuntimeError:  # optuna refuses reports to a finished trial
            if not self._finished():
                raise
            raise Lost(
                f"trial {self.trial.number} was ended by another process (a restarted sweeper marks the trials "
                "it finds running as lost and runs others in their place): this run stops"
            ) from None
        self.reported = metrics[self.objective]

    def judge(self, ctx: RunContext, epoch: int) -> None:
        # At the last epoch the run is over: it completes, whatever the pruner would say.
        if self.reported is not None and epoch < ctx.cfg.epochs and self.trial.should_prune():
            raise Pruned(
                f"trial {self.trial.number}: {self.objective} {self.reported:.4f} at epoch {epoch} "
                f"is worse than the pruner ({type(self.trial.study.pruner).__name__}) allows"
            )

    def on_end(self, ctx: RunContext) -> None:
        result = ctx.result
        if result.status == Status.LOST:  # the trial is finished: nothing more can be recorded on it
            return
        final = result.final or {}
        try:
            self.trial.set_system_attr(FINAL_ATTR, {k: v for k, v in final.items() if k.startswith(("val_", "test_"))})
            self.trial.set_system_attr(EPOCHS_ATTR, result.epochs_completed)
            self.trial.set_system_attr(STATUS_ATTR, result.status.value)
        except RuntimeError:  # optuna refuses attributes on a finished trial: a restarted sweeper failed it meanwhile
            if not self._finished():
                raise
            ctx.log.warning("optuna: trial %d ended before this run could record its end on it", self.trial.number)
            return
        if result.status == Status.INTERRUPTED:
            ctx.log.warning(
                "optuna: the same sweep command resumes study %s; trial %d %s",
                self.trial.study.study_name, self.trial.number,
                "goes on from its checkpoint" if stacked(ctx.hydra) else "will be run again",
            )


def trial_hooks(ctx: RunContext) -> list[Hook]:
    """The reporter hook when this run is a job of an Optuna sweep with a database; else nothing."""
    hydra = ctx.hydra
    if hydra is None or hydra.mode != RunMode.MULTIRUN or not is_optuna(hydra):
        return []
    if storage_url(hydra.sweeper.storage) is None:
        return []
    reporter = TrialReporter.connect(ctx)
    return [reporter] if reporter else []
