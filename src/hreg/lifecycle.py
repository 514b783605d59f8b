"""One run's lifecycle, the same for every engine: begin, an end to each epoch, and one end.

An engine trains; ``Lifecycle`` keeps the run's record and calls its hooks:

- ``begin`` once, before the first epoch this process trains;
- ``end_epoch`` after each epoch: the record (at evaluation epochs), the hooks'
  ``on_epoch_end``; it raises ``Diverged`` when the training loss blew up;
- ``judge`` once every run that trains alongside this one (a stack's members)
  has had its ``end_epoch``: a hook that compares runs (an Optuna pruner) sees
  all of this epoch's reports before any run is judged;
- ``end(failure)`` once, however the run ends: ``ending`` maps what stopped
  it to a ``Status`` and an exit code, every hook's ``on_end`` runs, and the
  record is saved.

A single-run engine uses it as a context manager (``with Lifecycle(...) as
run:``): a ``StopRun`` ends the run cleanly and is kept (``Interrupted``
goes on to the entry point, which exits with its code); any other exception
fails the run and goes on. The stacked engine keeps one per member and calls
``end`` itself when a member stops.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hreg.hooks import EpochStats, Hook, RunContext
from hreg.metrics import MAX_ENTROPY, weight_stats
from hreg.result import Status
from hreg.stops import ABORTED_EXIT, Diverged, Interrupted, StopRun
from hreg.threads import one_thread

#: A run has diverged when its mean training cross-entropy over an epoch exceeds this (or is NaN or
#: infinite): a hundred times what a model at chance scores (ln 10 = 2.3 nats). Such a run sits at
#: chance accuracy with its weights blown up; no run that learns comes near it.
DIVERGED_LOSS = 100 * MAX_ENTROPY
#: The exit code of a process whose run failed (an exception).
FAILED_EXIT = 1


@dataclass(frozen=True)
class Ending:
    """How a run ended: what its record keeps and what its process exits with."""

    status: Status
    error: str | None
    exit_code: int


def ending(failure: BaseException | None) -> Ending:
    """The one map from what stopped a run to its status and exit code.

    Nothing: completed. A ``StopRun``: its own status and code (early-stopped,
    pruned, diverged, lost: 0; interrupted: 128 + the signal). A second signal
    mid-epoch (``KeyboardInterrupt``): aborted, 130. Any other exception: failed, 1.
    """
    if failure is None:
        return Ending(Status.COMPLETED, None, 0)
    if isinstance(failure, StopRun):
        return Ending(failure.status, str(failure), failure.exit_code)
    if isinstance(failure, KeyboardInterrupt):
        return Ending(Status.ABORTED, "a second signal stopped it mid-epoch", ABORTED_EXIT)
    return Ending(Status.FAILED, repr(failure), FAILED_EXIT)


def divergence(stats: EpochStats) -> str | None:
    """Why an epoch's training loss counts as diverged, or None (see DIVERGED_LOSS)."""
    if not math.isfinite(stats.loss):
        return f"training loss is {stats.loss} (data {stats.data_loss}, penalty {stats.penalty})"
    if stats.data_loss > DIVERGED_LOSS:
        return f"training cross-entropy is {stats.data_loss:.4g}, above {DIVERGED_LOSS:.0f} (100 x ln 10): it blew up"
    return None


class Lifecycle:
    """The bookkeeping of one run from ``first_epoch`` to its end.

    ``sync_model``, given by an engine whose ``ctx.model`` is a copy (the stacked
    engine), refreshes it before the hooks that read it, and before the end of a
    run that stopped at an epoch boundary.
    """

    def __init__(self, ctx: RunContext, hooks: Sequence[Hook], first_epoch: int = 1,
                 sync_model: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.hooks = list(hooks)
        self.first_epoch = first_epoch
        self.sync_model = sync_model
        self.elapsed_before = ctx.result.wall_time_s  # a resumed run's earlier processes
        self.started = time.perf_counter()
        self.ending: Ending | None = None

    def wall_time(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    @property
    def over(self) -> bool:
        return self.ending is not None

    # --- the steps --------------------------------------------------------------------------------

    def begin(self) -> None:
        self.started = time.perf_counter()
        for hook in self.hooks:
            hook.on_start(self.ctx, self.first_epoch)

    def end_epoch(self, epoch: int, stats: EpochStats, metrics: dict[str, float] | None) -> None:
        """Record an epoch that trained; raise Diverged when its loss blew up.

        At evaluation epochs, when the hooks have work, torch runs on one thread (``threads.one_thread``).
        """
        result = self.ctx.result
        result.epochs_completed = epoch
        result.wall_time_s = self.wall_time()
        reason = divergence(stats)
        if reason:
            raise Diverged(reason)
        with one_thread(when=metrics is not None):
            improved = False
            if metrics is not None:
                metrics = {"epoch": epoch, **metrics, "penalty": stats.penalty}
                improved = result.record(metrics)
                result.save(self.ctx.run_dir)
            if self.sync_model is not None and any(hook.needs_model(epoch, improved) for hook in self.hooks):
                self.sync_model()
            for hook in self.hooks:
                hook.on_epoch_end(self.ctx, epoch, stats, metrics, improved)

    def judge(self, epoch: int) -> None:
        """Once every run alongside has ended this epoch: each hook may stop the run (a ``StopRun``)."""
        for hook in self.hooks:
            hook.judge(self.ctx, epoch)

    def end(self, failure: BaseException | None = None) -> Ending:
        """Close the record however the run ended: status and exit code, every hook's ``on_end``, the file.

        Every hook's ``on_end`` runs, in the hooks' order, even when one before it
        raised (a pending ``best.pt`` must reach the disk whatever the TensorBoard
        writer did); an error among them is raised once all have run.
        """
        end = self.ending = ending(failure)
        ctx, result = self.ctx, self.ctx.result
        if self.sync_model is not None and end.status not in (Status.FAILED, Status.ABORTED):
            self.sync_model()  # stopped at an epoch boundary: the model of that epoch
        result.finish(end.status, end.error)
        result.exit_code = end.exit_code or None
        result.wall_time_s = self.wall_time()
        with one_thread():
            try:
                with contextlib.ExitStack() as ending_hooks:
                    for hook in reversed(self.hooks):  # an ExitStack calls back last in, first out
                        ending_hooks.callback(hook.on_end, ctx)
                    if end.status.clean_end:
                        result.weights = weight_stats(ctx.model)
                        result.entropy_mean = ctx.entropy().mean().item()
            finally:
                result.save(ctx.run_dir)
        if end.error:
            ctx.log.warning("run stopped (%s) with %d epochs completed: %s", end.status, result.epochs_completed,
                            end.error)
        return end

    # --- as a context manager, for an engine of one run -------------------------------------------

    def __enter__(self) -> Lifecycle:
        try:
            self.begin()
        except BaseException as failure:
            self.end(failure)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, failure: BaseException | None, traceback: object) -> bool:
        self.end(failure)
        # A clean stop is kept here, but an interrupt goes on to the entry point (it exits 128 + signal).
        return isinstance(failure, StopRun) and not isinstance(failure, Interrupted)
