"""A run directory belongs to one process at a time.

Two processes writing into one directory would mix one run's config with the
other's results and checkpoints. So a process that trains, resumes or sweeps
into a directory first takes an OS-level lock on it (``flock`` on
``DIR/.lock``) and holds it until it ends; a second process gets one line and
exit code 2. The operating system drops the lock when its process dies, however
it dies, so a directory left by a killed run is taken over without ceremony.

``LockCallback`` (conf/config.yaml) takes the lock before Hydra writes anything
into the directory (its ``.hydra/`` files and log); ``run()`` takes it again
(locks are re-entrant within a process) for callers that do not go through
Hydra, such as ``hreg-resume``.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hreg.cli import exit_on_error
from hreg.errors import UserError

LOCK_FILE = ".lock"

#: Locks this process holds: resolved directory -> (file descriptor, how many holders).
_held: dict[Path, list[int]] = {}


class RunDirBusy(UserError):
    """Another live process holds the directory."""


def is_worker_process() -> bool:
    """Whether this process is a worker that a distributed run started beside its first process
    (``engine=lightning`` with several devices: Lightning sets LOCAL_RANK > 0 in them). The run and
    its directory belong to the first process, which holds the lock; workers write nothing there."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0


def acquire(directory: Path) -> None:
    """Take ``directory``'s lock for this process (again, if it holds it already)."""
    if is_worker_process():
        return
    path = Path(directory).resolve()
    if path in _held:
        _held[path][1] += 1
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirBusy(
            f"{path} is in use by {holder}; wait for it to end, or choose another directory"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
    _held[path] = [fd, 1]


def release(directory: Path) -> None:
    if is_worker_process():
        return
    path = Path(directory).resolve()
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[path]
        os.close(entry[0])  # closing the descriptor drops the lock


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds the directory for the block."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self) -> RunDirLock:
        acquire(self.directory)
        return self

    def __exit__(self, *exc: object) -> None:
        release(self.directory)


class LockCallback(Callback):
    """Holds a single run's directory, or a multirun's sweep directory, for the whole run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._acquire(config.hydra.run.dir)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._acquire(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(config.hydra.sweep.dir)

    @staticmethod
    def _acquire(directory: str) -> None:
        with exit_on_error("hreg"):
            acquire(Path(directory))
