"""The ``threads`` setting: how many CPU threads a job's torch may use, so that jobs running at once share the cores.

torch sizes its thread pools to every core of the machine. Two such processes
on the same cores spin against each other (measured on this project's 2-core
machine: a training step went from 3.7 ms to 199 ms). With ``threads=auto`` a
job takes ``max(1, cores // jobs at once)`` threads, where

* ``cores`` are the CPUs this process may run on: its affinity (taskset, a
  SLURM allocation), ``SLURM_CPUS_PER_TASK`` and submitit's ``cpus_per_task``
  when they are set;
* ``jobs at once`` is what the launcher runs side by side on one machine:
  joblib's ``n_jobs`` (at most the sweeper's batch), the batch hreg's
  ``submitit_local`` started together (``CONCURRENT_JOBS_ENV``), and 1 for
  every launcher that runs one job at a time in its process or allocation
  (basic, stacked, submitit_slurm) and for a single run.

A number (``threads=4``) wins over all of this.
"""

from __future__ import annotations

import os

from hydra.types import RunMode
from omegaconf import DictConfig

#: Set by hreg's submitit_local launcher for the jobs it starts: how many it started together.
CONCURRENT_JOBS_ENV = "HREG_CONCURRENT_JOBS"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def cpu_cores(hydra: DictConfig | None = None) -> int:
    """The CPUs this process may use: its affinity, bounded by a SLURM or submitit per-task allocation."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    allocated = [os.environ.get("SLURM_CPUS_PER_TASK")]
    if hydra is not None:
        allocated.append(hydra.launcher.get("cpus_per_task"))
    for value in allocated:
        if value is not None and str(value).isdigit() and int(value) > 0:
            cores = min(cores, int(value))
    return cores


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
        workers = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # joblib's -1: every core
        return min(workers, _sweeper_batch(hydra) or workers)
    return 1


def resolve_threads(setting: int | str, hydra: DictConfig | None) -> int:
    """``threads`` as a number: the setting itself, or auto's share of the cores."""
    if setting != "auto":
        return int(setting)
    return max(1, cpu_cores(hydra) // concurrent_jobs(hydra))


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
