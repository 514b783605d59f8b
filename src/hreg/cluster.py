"""hreg on submitit's launchers (``hydra/launcher=submitit_local`` and ``submitit_slurm``).

hydra-submitit-launcher (1.2.0) starts one submitit job per Hydra job and
collects their returns. hreg's subclasses of its launchers submit the same
jobs with the same executor settings (``submit``, the plugin's ``launch``
through submitit's public API), and add:

* A worker that ends without a result (killed, out of memory, its node lost,
  past its time limit) makes the plugin's ``launch`` raise, which ends the
  whole sweep. Here such a job fails alone: the sweeper gets a failed
  ``JobReturn`` for it (the Optuna sweeper fails its trial) and goes on.
* ``submitit_local`` starts its whole batch at once on this machine; its jobs
  are told how many (``threads.CONCURRENT_JOBS_ENV``) so that ``threads=auto``
  shares the cores among them.
* A job that reaches its time limit or is preempted gets SIGUSR2 from SLURM
  (``--signal``) or submitit_local first. The run stops after the epoch it is
  in and checkpoints it (``stops.deferred_signals``), then ``hand_over`` gives
  the signal to submitit's handler, which requeues the same job; the requeued
  job finds its run ``requeued`` and resumes from that checkpoint. A job lost
  outright (its node) resumes the same way, from its last periodic checkpoint.
  Hydra's plugin requeues a SLURM job at a time limit ``max_num_timeout``
  times, 0 by default; hreg's default is submitit's own, ``REQUEUES``.
* A mistake in a job's config would be one line in that job's error log and a
  traceback in the sweeper: every job of a batch is checked before any is
  submitted, and a mistake is one line (as the stacked launcher does). In an
  Optuna sweep a sampled job's mistake fails its trial only, as with the other
  launchers (the job's one line is the reason logged).

``SubmititLaunchers``, a Hydra callback in conf/config.yaml, puts hreg's
subclasses (``hydra_plugins/hreg_plugins/submitit_launchers.py``) in place of
the plugin's when a multirun starts, as ``OptunaSearch`` does for the sweeper.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hreg.cli import exit_on_error
from hreg.search.heartbeat import Heartbeats
from hreg.search.study import GRACE_BEATS
from hreg.stops import Interrupted
from hreg.threads import CONCURRENT_JOBS_ENV

log = logging.getLogger("hreg")

_PLUGIN = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
_HREG = "hydra_plugins.hreg_plugins.submitit_launchers"
#: The plugin's launcher classes and hreg's in their place.
LAUNCHERS = {f"{_PLUGIN}.{name}": f"{_HREG}.{name}" for name in ("LocalLauncher", "SlurmLauncher")}
#: How many times a job that reaches its time limit is requeued (submitit's default; Hydra's plugin sets 0).
REQUEUES = 3
#: Seconds between two looks at a batch's jobs (submitit's own polling caches their states meanwhile).
POLL_S = 1.0
#: Seconds between two questions to SLURM's controller about a batch's jobs (``squeue``).
QUEUE_S = 10.0
#: Seconds the sweeper goes on beating for a job SLURM has just started, until its process beats itself
#: (Python, torch and Hydra start, then the run connects to its trial; on a loaded node that takes a while).
STARTUP_S = 120.0


class WorkerLost(RuntimeError):
    """A submitit job's process ended without a result: its Hydra job failed."""


class SubmititLaunchers(Callback):
    """At the start of a multirun, replaces the plugin's submitit launcher by hreg's subclass of it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = config.hydra.launcher.get("_target_")
        if target not in LAUNCHERS:
            return
        from hreg.config import given

        overrides = config.hydra.overrides.hydra
        settings = {"_target_": LAUNCHERS[target]}
        if "max_num_timeout" in config.hydra.launcher and "hydra.launcher.max_num_timeout" not in given(overrides):
            settings["max_num_timeout"] = REQUEUES  # submitit_slurm's (submitit_local's executor has REQUEUES)
        with read_write(config), open_dict(config):
            for key, value in settings.items():
                config.hydra.launcher[key] = value
                overrides.append(f"hydra.launcher.{key}={value}")  # the jobs' configs too


def requeued(run_dir: Path) -> bool:
    """Whether this process is a submitit job started again in its own directory (requeued after a time
    limit or a preemption, or after its node was lost) whose run can go on from its last checkpoint.

    A sweep's job directory is new to each sweep (``rundir.claim``), so a record found there is an earlier
    attempt of this same job.
    """
    from hreg.rundir import resumable

    return bool(os.environ.get("SUBMITIT_EXECUTOR")) and resumable(run_dir)


def hand_over(stop: Interrupted) -> None:
    """A SIGUSR2 that stopped a run (checkpointed) goes on to the handler hreg deferred it from.

    In a submitit job that is submitit's: it calls the launcher's ``checkpoint``,
    requeues the job and exits (or, past ``max_num_timeout``, fails the job).
    Elsewhere nothing: the entry point exits 128 + the signal.
    """
    handler = signal.getsignal(signal.SIGUSR2)
    if stop.signum == signal.SIGUSR2 and callable(handler):
        log.warning("%s; handing the signal to the job's scheduler (submitit requeues the job)", stop)
        handler(stop.signum, None)


def _lost_job(job: Any) -> JobReturn:
    """The failed JobReturn of a submitit job whose process left no result; the log says where its output is."""
    try:
        overrides = list(job.submission().args[0])
    except Exception:  # the submission file is unreadable: the job is still failed, not the sweep
        overrides = []
    last = [line for line in (job.stderr() or "").splitlines() if line.strip()][-1:]
    reason = last[0] if last and last[0].startswith("hreg") else "its process ended (killed, out of memory, a time limit?)"
    state = job.state  # the scheduler's word for it (SLURM: "CANCELLED by 0", "TIMEOUT", "NODE_FAIL", ...)
    if state not in ("UNKNOWN", "FINISHED", "COMPLETED"):
        reason = f"{reason} ({state})"
    log.error("job %s (%s) ended without a result, so it failed: %s; its output: %s", job.job_id, " ".join(overrides),
              reason, job.paths.stderr)
    return lost(overrides, f"submitit job {job.job_id} ended without a result: {reason}")


def lost(overrides: Sequence[str], why: str) -> JobReturn:
    """The failed JobReturn of a job whose worker was lost: ``WorkerLost(why)`` through Hydra's public setter."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = WorkerLost(why)
    return ret


def _result(job: Any) -> JobReturn:
    """A submitit job's JobReturn; a failed one when its process left no result."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError:  # a FailedJobError (the job's own code raised outside the task) goes on
        return _lost_job(job)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the duration (submitit_local's jobs inherit it)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def submit(launcher: Any, executor_name: str, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list[JobReturn]:
    """The plugin's launch of a batch (the same executor, parameters, job arguments and log lines, through
    submitit's public API), collecting each job's result so that a job without one fails alone."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    init_keys = {"max_num_timeout", "submitit_folder"}
    executor = submitit.AutoExecutor(cluster=executor_name, folder=params["submitit_folder"],
                                     **{f"{executor_name}_max_num_timeout": params["max_num_timeout"]}
                                     if "max_num_timeout" in params else {})
    queue = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in queue else f"{executor_name}_{key}": value
                                  for key, value in params.items() if key not in init_keys})
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    log.info("Submitit '%s' sweep output dir : %s", executor_name, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in launcher.config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(launcher.config.hydra.sweep.mode), 8))
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*job_params))
    return collect(jobs, [list(overrides) for overrides in job_overrides], Heartbeats.of(launcher.config))


def collect(jobs: Sequence[Any], job_overrides: list[list[str]], heartbeats: Heartbeats | None) -> list[JobReturn]:
    """Each job's return as it ends; a job whose trial stopped beating (``heartbeats``) is cancelled and fails
    alone, with a line naming it (its scheduler may never say that its node or process is gone).

    A job SLURM still holds has not ended, whatever its accounting says: a requeued job's first attempt can
    show there as ended (``FAILED``) before the controller queues it again. While it waits in the queue no
    process of its own beats, so the sweeper beats for its trial, and goes on for ``STARTUP_S`` after the job
    starts: its process beats only once it has started and connected."""
    returns: dict[int, JobReturn] = {}
    every = QUEUE_S if heartbeats is None else min(QUEUE_S, heartbeats.heartbeat_s)  # a queued job beats in time
    held, asked = {}, -every
    queued: dict[int, float] = {}  # when each job was last seen waiting in the queue
    while len(returns) < len(jobs):
        now = time.monotonic()
        if now - asked >= every:
            held, asked = _held(jobs), now
        for i, job in enumerate(jobs):
            if i in returns:
                continue
            state = held.get(job.job_id)
            if state is not None and state not in ("RUNNING", "COMPLETING"):
                queued[i] = now
            if job.done() and (state is None or job.paths.result_pickle.exists()):
                returns[i] = _result(job)
            elif i in queued and now - queued[i] < STARTUP_S:
                if heartbeats is not None:
                    heartbeats.beat(job_overrides[i])
            elif heartbeats is not None and heartbeats.stopped(job_overrides[i]):
                job.cancel(check=False)
                log.error("job %s (%s) stopped its heartbeat for %d s, so it was cancelled and failed; its output: %s",
                          job.job_id, " ".join(job_overrides[i]), GRACE_BEATS * heartbeats.heartbeat_s,
                          job.paths.stderr)
                returns[i] = lost(job_overrides[i], f"submitit job {job.job_id}: no heartbeat")
        if len(returns) < len(jobs):
            time.sleep(POLL_S)
    return [returns[i] for i in range(len(jobs))]


def _held(jobs: Sequence[Any]) -> dict[str, str]:
    """The state of each of ``jobs`` that SLURM's controller still holds (pending, requeued, running), by job
    id (``squeue``, one line per array task); nothing for jobs of another executor, or when it does not answer."""
    import submitit

    ids = [job.job_id for job in jobs if isinstance(job, submitit.SlurmJob)]
    if not ids:
        return {}
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %T", f"--jobs={','.join(ids)}"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


def validate_jobs(launcher: Any, job_overrides: Sequence[Sequence[str]]) -> None:
    """Every job's config as the job will compose it, checked (one line and exit 2 for a mistake)."""
    from hreg.config import validate  # torch: only when a batch is launched

    with exit_on_error("hreg"):
        for overrides in job_overrides:
            config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
            with read_write(config), open_dict(config):
                del config["hydra"]
            validate(config)


def launch(launcher: Any, executor_name: str, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> Sequence[JobReturn]:
    """One batch, checked first, submitted with lost workers failing alone (and, on ``local``: the batch size
    told to its jobs)."""
    from hreg.config import validate_launcher
    from hreg.search.study import is_optuna

    with exit_on_error("hreg"):
        validate_launcher(launcher.config.hydra)
    if not is_optuna(launcher.config.hydra):  # a sampled trial's mistake fails that trial only
        validate_jobs(launcher, job_overrides)
    told = {CONCURRENT_JOBS_ENV: str(len(job_overrides))} if executor_name == "local" else {}
    with _environment(told):
        return submit(launcher, executor_name, job_overrides, initial_job_idx)
