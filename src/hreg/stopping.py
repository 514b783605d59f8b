"""Ending a run early but cleanly: on a signal, or when validation stops improving.

Ctrl-C (SIGINT) and SIGTERM do not kill training mid-batch: they set a flag,
the loop finishes the epoch it is in (tens of milliseconds), the checkpoint
hook saves it, and the run exits as "interrupted", ready to be resumed. A
second signal interrupts at once (that run resumes from its last periodic
checkpoint).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hreg.hooks import EpochStats, Hook, RunContext, StopRun
from hreg.result import Status


class Interrupted(StopRun):
    status = Status.INTERRUPTED

    def __init__(self, signum: int, epoch: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} received; stopped cleanly after epoch {epoch}")
        self.exit_code = 128 + signum


class EarlyStopped(StopRun):
    status = Status.EARLY_STOPPED


class StopRequest:
    """Set by a signal handler; read by the loop between epochs."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self, epoch: int) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum, epoch)


@contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a StopRequest for the duration (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class EarlyStopping(Hook):
    """Stops when the validation objective has not improved for ``patience`` evaluations."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        if metrics is None or improved:
            return
        best_epoch = ctx.result.best["epoch"]
        waited = sum(1 for h in ctx.result.history if h["epoch"] > best_epoch)
        if waited >= self.patience:
            ctx.result.set_extra(
                "early_stopping", {"patience": self.patience, "best_epoch": best_epoch, "stopped_epoch": epoch}
            )
            raise EarlyStopped(
                f"{ctx.cfg.objective} has not improved for {waited} evaluations since epoch {best_epoch}"
            )
