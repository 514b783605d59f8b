"""Every way a run can stop before its last epoch, and the signals that ask it to.

A ``StopRun`` ends a run cleanly at an epoch boundary; its ``status`` is what
the run record keeps and its ``exit_code`` what the process exits with.
Hooks and engines raise them; ``lifecycle.Lifecycle`` is the one place that
turns them (and any other exception) into the end of the run.

Ctrl-C (SIGINT), SIGTERM and SIGUSR2 (the warning SLURM and submitit send
before a time limit or a preemption) do not kill training mid-batch:
``deferred_signals`` turns them into a flag, the engine finishes the epoch it is in, and raises
``Interrupted`` there: the checkpoint hook saves that epoch, and the run can be
resumed. A second signal interrupts at once (``KeyboardInterrupt``: the run is
``aborted`` and resumes from its last periodic checkpoint).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hreg.result import Status

#: The exit code of a process whose run a second signal aborted mid-epoch (as a shell reports SIGINT).
ABORTED_EXIT = 130


#: The signals that stop a run at the end of its epoch.
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class StopRun(Exception):
    """Ends a run early but cleanly, at the end of an epoch."""

    status = Status.FAILED
    exit_code = 0  # what the process exits with when this stop ends it


class Diverged(StopRun):
    """The training loss blew up (``lifecycle.divergence``)."""

    status = Status.DIVERGED


class EarlyStopped(StopRun):
    """The validation objective stopped improving (``early_stopping.EarlyStopping``)."""

    status = Status.EARLY_STOPPED


class Pruned(StopRun):
    """The Optuna pruner stopped the run's trial."""

    status = Status.PRUNED


class Lost(StopRun):
    """The run's Optuna trial ended while it trained (a restarted sweeper failed it as lost)."""

    status = Status.LOST


class Interrupted(StopRun):
    """SIGINT, SIGTERM or SIGUSR2: the run stopped after the epoch it was in and checkpointed it; exit 128 + signal."""

    status = Status.INTERRUPTED

    def __init__(self, signum: int, epoch: int, resume: str = "") -> None:
        super().__init__(f"{signal.Signals(signum).name} received; stopped cleanly after epoch {epoch}")
        self.signum = signum
        self.exit_code = 128 + signum
        self.resume = resume  # how to continue, for the entry point's last line (``hreg-resume DIR``)


class StopRequest:
    """Set by a signal handler; read by the engine between epochs."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self, epoch: int) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum, epoch)


@contextmanager
def deferred_signals() -> Iterator[StopRequest]:
    """Turn SIGINT, SIGTERM and SIGUSR2 into a StopRequest for the duration (main thread only); the handlers
    that were there before are back once it ends (submitit's, which requeues a job: ``cluster.hand_over``)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in DEFERRED}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
