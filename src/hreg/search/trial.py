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
from hreg.result import RunResult, Status
from hreg.search.heartbeat import Beat
from hreg.search.outage import Backlog, Outage, storage_errors
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


def run_attrs(result: RunResult) -> dict[str, Any]:
    """What a trial records of its run's end: final validation and test metrics, epochs, status."""
    final = result.final or {}
    return {FINAL_ATTR: {k: v for k, v in final.items() if k.startswith(("val_", "test_"))},
            EPOCHS_ATTR: result.epochs_completed, STATUS_ATTR: result.status.value}


class TrialReporter(Hook):
    """Reports each evaluation to the job's Optuna trial and stops the run when the pruner says so.

    It reports in ``on_epoch_end`` and asks the pruner in ``judge``: the members
    of a stack have all reported an epoch before any of them is judged on it.
    While the database does not answer, the run trains on: its reports wait, in
    order, and are written when it answers again, and no pruning is asked
    meanwhile. Past ``search.outage_limit_s`` the run gives up reporting; its
    ``result.json`` keeps everything, and the sweeper tells the trial from it.
    """

    def __init__(self, study: Study, storage: BaseStorage, trial_id: int, number: int, objective: str,
                 outage: Outage) -> None:
        self.study = study
        self.storage = storage
        self.trial_id = trial_id
        self.number = number
        self.objective = objective
        self.outage = outage
        self.backlog = Backlog(outage, (
            f"optuna: trial {number}: the study database has not answered for {outage.limit_s:.0f} s "
            "(search.outage_limit_s): this run trains on without reporting; its result.json tells the trial later"))
        self.reported: float | None = None  # the value reported at this epoch, until judged
        self.beat: Beat | None = None

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
        number = int(sweeper.trial)
        outage = Outage(float(ctx.cfg.search.outage_limit_s), f"trial {number} trains on, its reports wait", ctx.log)
        pool = on_pool(hydra)
        pruner = build_pruner(ctx.cfg.search, pool)
        beat_s = None if pool else ctx.cfg.search.get("heartbeat_s")  # a pool's jobs live in the sweeper's process

        def open_trial() -> TrialReporter:
            storage = open_storage(storage_url(sweeper.storage), heartbeat_s=beat_s)
            study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(sweeper.study_name), number)
            return cls(study, storage, trial_id, number, ctx.cfg.objective, outage)

        reporter = outage.retry(open_trial, f"trial {number} connected")
        if reporter._finished():
            ctx.log.warning("optuna: trial %d of study %s has ended before this job reported to it", number,
                            reporter.study.study_name)
        else:
            reporter._write(RUN_DIR_ATTR, hydra.runtime.output_dir)
            if beat_s:
                reporter.beat = Beat(reporter.storage, reporter.trial_id, beat_s)
            ctx.log.info("optuna: trial %d of study %s (pruner %s)", number, reporter.study.study_name,
                         type(pruner).__name__)
        return reporter

    def _finished(self) -> bool:
        """Whether the trial has ended (read from the database)."""
        return self.outage.retry(lambda: self.storage.get_trial(self.trial_id).state.is_finished(),
                                 f"trial {self.number} read")

    def _write(self, key: str | None, value: Any, epoch: int | None = None) -> bool:
        """Record ``key`` (or, without one, the report ``value`` at ``epoch``) after whatever waits; whether all
        is written. An ended trial refuses it: ``UpdateFinishedTrialError``."""
        if key is None:
            return self.backlog.put(lambda: self.storage.set_trial_intermediate_value(self.trial_id, epoch, value),
                                    f"reporting epoch {epoch} to trial {self.number}")
        return self.backlog.put(lambda: self.storage.set_trial_system_attr(self.trial_id, key, value),
                                f"recording {key} on trial {self.number}")

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        ctx.result.set_extra("optuna_trial", self.number)

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        self.reported = None
        if metrics is None or not math.isfinite(metrics[self.objective]):
            return
        try:
            written = self._write(None, metrics[self.objective], epoch)
        except UpdateFinishedTrialError:
            raise Lost(
                f"trial {self.number} was ended by another process (a restarted sweeper marks the trials "
                "it finds running as lost and runs others in their place): this run stops"
            ) from None
        if written:
            self.reported = metrics[self.objective]

    def judge(self, ctx: RunContext, epoch: int) -> None:
        # At the last epoch the run is over: it completes, whatever the pruner would say. While reports wait
        # for the database, nothing is judged.
        if self.reported is None or epoch >= ctx.cfg.epochs:
            return
        pruner = self.study.pruner
        try:
            prune = pruner.prune(self.study, self.storage.get_trial(self.trial_id))
        except storage_errors() as error:
            self.outage.failed(error)
            return
        if prune:
            raise Pruned(
                f"trial {self.number}: {self.objective} {self.reported:.4f} at epoch {epoch} "
                f"is worse than the pruner ({type(pruner).__name__}) allows"
            )

    def on_end(self, ctx: RunContext) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        if self.beat is not None:
            self.beat.stop()
        result = ctx.result
        if result.status == Status.LOST:  # the trial is finished: nothing more can be recorded on it
            return
        try:
            for key, value in run_attrs(result).items():
                self._write(key, value)
            # The run is over: wait for the database, within the limit.
            self.outage.wait_until(lambda: self.backlog.flush() or self.backlog.given_up)
        except UpdateFinishedTrialError:  # a restarted sweeper failed the trial meanwhile
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
