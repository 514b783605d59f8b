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

A directory also belongs to one *run*: a new run refuses a directory that holds
another run's ``result.json`` (and a new multirun, a sweep directory that holds
its jobs'), unless ``overwrite=true`` moves the earlier one aside (``claim``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hreg.cli import exit_on_error
from hreg.errors import ConfigError, UserError
from hreg.result import RESULT_FILE, RunResult, Status
from hreg.search.study import is_optuna

LOCK_FILE = ".lock"

log = logging.getLogger("hreg")

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


def resumable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that has not ended and a checkpoint it can go on from (``last.pt``)."""
    from hreg.checkpoint import LAST, checkpoint_dir

    if not (run_dir / RESULT_FILE).is_file() or not (checkpoint_dir(run_dir) / LAST).is_file():
        return False
    return RunResult.load(run_dir).status.resumable


class RunDirTaken(UserError):
    """The directory holds another run's record: a new run there would replace it."""


def _status(run_dir: Path) -> str:
    try:
        return RunResult.load(run_dir).status.value
    except UserError:
        return "unreadable"


def _aside(directory: Path) -> Path:
    """Where ``overwrite=true`` moves an earlier run: ``D.previous-1``, or the next number free."""
    number = 1
    while (aside := directory.with_name(f"{directory.name}.previous-{number}")).exists():
        number += 1
    return aside


def claim(directory: Path, overwrite: bool, sweep: bool = False) -> None:
    """Keep a new run (``sweep``: a new multirun) from writing over another run's record in ``directory``.

    Refused with one line saying what is there and the ways on; with ``overwrite`` the earlier run is
    moved aside, never deleted. Call it holding ``directory``'s lock (so that no live run is moved); the
    lock is held on the new, empty directory afterwards. Continuing a run (``hreg-resume``, a requeued
    cluster job, a resumed Optuna study) does not come here: only a new run does.
    """
    if is_worker_process():  # a distributed run's worker runs the command again, into its first process's run
        return
    path = Path(directory)
    records = sorted(path.glob(f"*/{RESULT_FILE}")) if sweep else [path / RESULT_FILE]
    records = [record for record in records if record.exists()]
    if not records:
        return
    aside = _aside(path)
    if not overwrite:
        if sweep:
            what = f"{path} holds {len(records)} runs of an earlier multirun"
            ways = "choose another hydra.sweep.dir"
        else:
            status = _status(path)
            what = f"{path} holds a {status} run (its {RESULT_FILE})"
            ways = (f"continue it with `hreg-resume {path}`, choose another hydra.run.dir"
                    if status in {s.value for s in Status if s.resumable} else "choose another hydra.run.dir")
        raise RunDirTaken(f"{what}: {ways}, or give overwrite=true to move it to {aside}")
    resolved = path.resolve()
    fd, holders = _held.pop(resolved)
    os.rename(resolved, resolved.with_name(aside.name))
    os.close(fd)  # the lock went with the old directory; take the new one's
    acquire(path)
    _held[resolved][1] = holders
    log.warning("overwrite=true: the earlier run in %s is now in %s", path, aside)


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
    """Holds a single run's directory, or a multirun's sweep directory, for the whole run, and keeps a new
    run (or multirun) from replacing an earlier one's records there (``claim``). An Optuna sweep's
    directory holds its study, which the same command resumes: it is held, not claimed."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._take(config, config.hydra.run.dir, sweep=False)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._take(config, config.hydra.sweep.dir, sweep=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(config.hydra.sweep.dir)

    @staticmethod
    def _take(config: DictConfig, directory: str, sweep: bool) -> None:
        with exit_on_error("hreg"):
            overwrite = config.get("overwrite", False)
            if not isinstance(overwrite, bool):
                raise ConfigError("overwrite", overwrite, "must be true or false")
            acquire(Path(directory))
            if not (sweep and is_optuna(config.hydra)):
                claim(Path(directory), overwrite, sweep)
