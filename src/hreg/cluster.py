"""hreg on submitit's launchers (``hydra/launcher=submitit_local`` and ``submitit_slurm``).

hydra-submitit-launcher (1.2.0) starts one submitit job per Hydra job and
collects their returns. What hreg adds:

* A worker that ends without a result (killed, out of memory, its node lost,
  past its time limit) makes the plugin's ``launch`` raise, which ends the
  whole sweep. Here such a job fails alone: the sweeper gets a failed
  ``JobReturn`` for it (the Optuna sweeper fails its trial) and goes on.
* ``submitit_local`` starts its whole batch at once on this machine; its jobs
  are told how many (``threads.CONCURRENT_JOBS_ENV``) so that ``threads=auto``
  shares the cores among them.
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from hreg.errors import exit_on_error
from hreg.threads import CONCURRENT_JOBS_ENV

log = logging.getLogger("hreg")

_PLUGIN = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
_HREG = "hydra_plugins.hreg_plugins.submitit_launchers"
#: The plugin's launcher classes and hreg's in their place.
LAUNCHERS = {f"{_PLUGIN}.{name}": f"{_HREG}.{name}" for name in ("LocalLauncher", "SlurmLauncher")}


class WorkerLost(RuntimeError):
    """A submitit job's process ended without a result: its Hydra job failed."""


class SubmititLaunchers(Callback):
    """At the start of a multirun, replaces the plugin's submitit launcher by hreg's subclass of it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = config.hydra.launcher.get("_target_")
        if target not in LAUNCHERS:
            return
        with read_write(config), open_dict(config):
            config.hydra.launcher._target_ = LAUNCHERS[target]
            config.hydra.overrides.hydra.append(f"hydra.launcher._target_={LAUNCHERS[target]}")  # the jobs' too


def _lost_job(job: Any) -> JobReturn:
    """The failed JobReturn of a submitit job whose process left no result; the log says where its output is."""
    try:
        overrides = list(job.submission().args[0])
    except Exception:  # the submission file is unreadable: the job is still failed, not the sweep
        overrides = []
    last = [line for line in (job.stderr() or "").splitlines() if line.strip()][-1:]
    reason = last[0] if last and last[0].startswith("hreg") else "its process ended (killed, out of memory, a time limit?)"
    log.error("job %s (%s) ended without a result, so it failed: %s; its output: %s", job.job_id, " ".join(overrides),
              reason, job.paths.stderr)
    return JobReturn(overrides=overrides, status=JobStatus.FAILED,
                     _return_value=WorkerLost(f"submitit job {job.job_id} ended without a result: {reason}"))


@contextlib.contextmanager
def _lost_workers_fail_alone() -> Iterator[None]:
    """While the plugin collects its jobs' results, a job without one gives a failed JobReturn, not an exception."""
    import submitit
    from submitit.core.utils import FailedJobError, UncompletedJobError

    results = submitit.Job.results

    def results_or_failure(job: Any) -> list[Any]:
        try:
            return results(job)
        except FailedJobError:  # the job's own code raised outside the task (Hydra returns the task's failures)
            raise
        except UncompletedJobError:
            return [_lost_job(job)]

    with mock.patch.object(submitit.Job, "results", results_or_failure):
        yield


def validate_jobs(launcher: Any, job_overrides: Sequence[Sequence[str]]) -> None:
    """Every job's config as the job will compose it, checked (one line and exit 2 for a mistake)."""
    from hreg.config import validate  # torch: only when a batch is launched

    with exit_on_error("hreg"):
        for overrides in job_overrides:
            config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
            with read_write(config), open_dict(config):
                del config["hydra"]
            validate(config)


def launch(
    launcher: Any,
    plugin_launch: Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]],
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    local: bool,
) -> Sequence[JobReturn]:
    """The plugin's launch of one batch, checked first, with lost workers failing alone (and, ``local``: the
    batch size told to its jobs)."""
    from hreg.search.study import is_optuna

    if not is_optuna(launcher.config.hydra):  # a sampled trial's mistake fails that trial only
        validate_jobs(launcher, job_overrides)
    told = {CONCURRENT_JOBS_ENV: str(len(job_overrides))} if local else {}  # submitit_local's jobs inherit it
    with _lost_workers_fail_alone(), mock.patch.dict(os.environ, told):
        return plugin_launch(job_overrides, initial_job_idx)
