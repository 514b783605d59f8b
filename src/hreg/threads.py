"""The ``threads`` setting: how many CPU threads a job's torch may use, so that jobs running at once share the cores.

torch sizes its thread pools to every core of the machine. Two such processes
on the same cores spin against each other: a training step becomes many times
slower (``benchmarks/README.md``). With ``threads=auto`` a
job takes ``max(1, cores // jobs at once)`` threads, where

* ``cores`` are the CPUs this process may run on: its affinity (taskset, a
  SLURM allocation);
* ``jobs at once`` is what the launcher runs side by side on one machine:
  joblib's ``n_jobs`` (at most the sweeper's batch), the batch hreg's
  ``submitit_local`` started together (``CONCURRENT_JOBS_ENV``), and 1 for
  every launcher that runs one job at a time in its process or allocation
  (basic, stacked, submitit_slurm) and for a single run.

The share is at most what the job was granted on its own (``SLURM_CPUS_PER_TASK``,
submitit's ``cpus_per_task``, ``OMP_NUM_THREADS``) and at most torch's own
default (which may count physical cores only). A number (``threads=4``) wins
over all of this.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.types import RunMode
from omegaconf import DictConfig

#: Set by hreg's submitit_local launcher for the jobs it starts: how many it started together.
CONCURRENT_JOBS_ENV = "HREG_CONCURRENT_JOBS"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def cpu_cores() -> int:
    """The CPUs this process may run on (its affinity: taskset, a SLURM allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _per_job_limits(hydra: DictConfig | None) -> list[int]:
    """What a job was granted or asked for on its own: SLURM's and submitit's CPUs per task, OMP_NUM_THREADS."""
    values = [os.environ.get("SLURM_CPUS_PER_TASK"), os.environ.get("OMP_NUM_THREADS")]
    if hydra is not None:
        values.append(hydra.launcher.get("cpus_per_task"))
    return [int(v) for v in values if v is not None and str(v).isdigit() and int(v) > 0]


def _sweeper_batch(hydra: DictConfig) -> int | None:
    """Jobs the sweeper hands the launcher at once, where its config says (Optuna's n_jobs, max_batch_size)."""
    for key in ("n_jobs", "max_batch_size"):
        value = hydra.sweeper.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def concurrent_jobs(hydra: DictConfig | None) -> int:
    """How many jobs of this one's sweep run at the same time on this machine (1 for a single run)."""
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return 1
    if CONCURRENT_JOBS_ENV in os.environ:
        return max(1, int(os.environ[CONCURRENT_JOBS_ENV]))
    if hydra.launcher.get("_target_") == JOBLIB_LAUNCHER:
        n_jobs = int(hydra.launcher.get("n_jobs") or 1)
        workers = n_jobs if n_jobs > 0 else max(1, cpu_cores() + 1 + n_jobs)  # joblib's -1: every core
        return min(workers, _sweeper_batch(hydra) or workers)
    return 1


#: torch's own thread count before hreg first set one (it may count physical cores only): auto never exceeds it.
_torch_default: int | None = None


def resolve_threads(setting: int | str, hydra: DictConfig | None) -> int:
    """``threads`` as a number: the setting itself, or auto's share of the cores (at most a job's own limits
    and torch's default)."""
    if setting != "auto":
        return int(setting)
    import torch

    global _torch_default
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    share = cpu_cores() // concurrent_jobs(hydra)
    return max(1, min([share, _torch_default, *_per_job_limits(hydra)]))


def set_threads(setting: int | str, hydra: DictConfig | None) -> int:
    """Size torch's intra- and inter-op thread pools for this job; returns the number."""
    import torch

    threads = resolve_threads(setting, hydra)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the process's first parallel work (a later job of the same process)
        pass
    return threads


@contextmanager
def one_thread(when: bool = True) -> Iterator[None]:
    """torch on one thread for a while (``when`` it is asked for): for bookkeeping, whose torch work is small
    operations between Python and NumPy work (records, histograms, checkpoints).

    torch's other threads sleep during such work, and a parallel operation that must wake them waits
    far longer than the operation itself takes on one thread (on a VM, milliseconds). Nested uses, and
    processes on one thread, change nothing.
    """
    import torch

    threads = torch.get_num_threads()
    if not when or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
