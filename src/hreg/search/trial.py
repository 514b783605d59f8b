"""The job's side of a search: find its trial in the study database, report to it, stop when pruned.

The plugin asks a trial, launches a job with the trial's overrides and tells
the job's return value. A job cannot finish its own trial (the plugin's later
tell would raise), so the job reports each evaluation, records its run's status
and final metrics on the trial, and lets the study storage (storage.py) turn
the plugin's tell into PRUNED for a pruned run. A diverged run returns NaN and
its job fails (callback.py), so its trial fails.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from hreg.hooks import EpochStats, Hook, RunContext, StopRun
from hreg.result import Status
from hreg.search.study import (
    EPOCHS_ATTR, FINAL_ATTR, JOB_ATTR, OVERRIDES_ATTR, RUN_DIR_ATTR, STATUS_ATTR, is_optuna, job_key, storage_url,
)

if TYPE_CHECKING:
    from optuna.trial import Trial

# optuna is imported where it is used: single runs never pay for it.


class Pruned(StopRun):
    status = Status.PRUNED


class TrialEnded(StopRun):
    """The trial ended while its run trained: a restarted sweep failed it as lost (and asked another in its place)."""

    status = Status.LOST


def build_pruner(search: DictConfig):
    """``search.pruner`` instantiated (no pruning when null)."""
    import optuna

    return instantiate(search.pruner) if search.pruner else optuna.pruners.NopPruner()


class TrialReporter(Hook):
    """Reports each evaluation to the job's Optuna trial and stops the run when the pruner says so."""

    def __init__(self, trial: Trial, objective: str) -> None:
        self.trial = trial
        self.objective = objective

    @classmethod
    def connect(cls, ctx: RunContext) -> TrialReporter | None:
        """Reconnect to the sweep's study and claim the trial launched as this job (overrides, sweeper and number).

        A job started again in its own directory (a requeued submitit job) claims its trial again. A job whose
        trial has ended already (a restarted sweeper failed it as lost) gets a reporter all the same: its first
        report is refused, and the run stops as lost.
        """
        import optuna
        from optuna.trial import Trial, TrialState

        hydra = ctx.hydra
        sweeper = hydra.sweeper
        pruner = build_pruner(ctx.cfg.search)
        study = optuna.load_study(sweeper.study_name, storage=storage_url(sweeper.storage), pruner=pruner)
        overrides, here, job = sorted(hydra.overrides.task), hydra.runtime.output_dir, job_key(hydra, hydra.job.num)
        for frozen in study.get_trials(deepcopy=False):
            attrs = frozen.system_attrs
            if attrs.get(OVERRIDES_ATTR) != overrides or attrs.get(RUN_DIR_ATTR, here) != here:
                continue
            trial = Trial(study, frozen._trial_id)
            if frozen.state == TrialState.RUNNING and attrs.get(JOB_ATTR, job) == job:
                trial.set_system_attr(RUN_DIR_ATTR, here)
                ctx.log.info("optuna: trial %d of study %s (pruner %s)", trial.number, study.study_name, type(pruner).__name__)
                return cls(trial, ctx.cfg.objective)
            if attrs.get(JOB_ATTR) == job:  # this very job's trial (the sweeper id makes it unique), ended
                ctx.log.warning("optuna: trial %d of study %s has ended (%s) before this job reported to it",
                                trial.number, study.study_name, frozen.state.name.lower())
                return cls(trial, ctx.cfg.objective)
        ctx.log.warning("optuna: no running trial of study %s matches this job; it reports nothing", study.study_name)
        return None

    def _finished(self) -> bool:
        """Whether the trial has ended (read from the database, not this process's cache)."""
        return self.trial.study._storage.get_trial(self.trial._trial_id).state.is_finished()

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        ctx.result.set_extra("optuna_trial", self.trial.number)

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        if metrics is None or not math.isfinite(metrics[self.objective]):
            return
        try:
            self.trial.report(metrics[self.objective], epoch)
        except RuntimeError:  # optuna refuses reports to a finished trial
            if not self._finished():
                raise
            raise TrialEnded(
                f"trial {self.trial.number} was ended by another process (a restarted sweeper marks the trials "
                "it finds running as lost and runs others in their place): this run stops"
            ) from None
        if self.trial.should_prune():
            raise Pruned(
                f"trial {self.trial.number}: {self.objective} {metrics[self.objective]:.4f} at epoch {epoch} "
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
                "optuna: the same sweep command resumes study %s; trial %d will be run again",
                self.trial.study.study_name, self.trial.number,
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
