"""``hydra/launcher=stacked``: a batch of jobs from any sweeper, trained as stacks in this process.

For each batch the sweeper hands over (the basic sweeper: the whole sweep) the
launcher composes every job's config, checks them all, groups the jobs that can
share a stack (grouping.py), and runs each group: a group of one through
Hydra's own ``run_job`` and the task function (the native loop), a larger group
through the stacked engine, each of its jobs opened and closed as ``run_job``
would (job.py). Each job's directory ends up as a native run's would, with
``"launcher": "stacked"`` in its result file.

Another application's jobs (a config that is not an hreg run's, as in Hydra's
launcher test suites) each go through ``run_job``, one after the other.

hreg's Optuna sweeper hands over no batch: it calls ``pool`` (pool.py), which
asks for a job whenever a slot frees and trains the jobs as stacks that take turns.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from itertools import zip_longest

from hydra.core.utils import JobReturn, env_override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hreg.cli import exit_on_error
from hreg.config import is_run_config, validate, validate_launcher
from hreg.data import Splits
from hreg.device import build_device
from hreg.engines.stacked.grouping import data_key, default_max_members, plan_stacks
from hreg.engines.stacked.job import Job, JobContext
from hreg.engines.stacked.pool import Pool
from hreg.engines.stacked.stack import Member, fit_stack
from hreg.progress import LOG_FORMAT
from hreg.search.pool import Asked
from hreg.stops import Interrupted
from hreg.threads import set_threads

log = logging.getLogger("hreg")


@contextlib.contextmanager
def stack_console() -> Iterator[None]:
    """The stack's own lines on the console, formatted as a job's (Hydra's logging gives the root logger its
    own format between jobs); the members' lines go to their own log files."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(console)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(console)
        log.propagate = True


class StackedLaunch:
    """What the launcher plugin does with one batch of jobs, or with a pool of them."""

    def __init__(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig,
                 max_members: int | None) -> None:
        with exit_on_error("hreg"):
            validate_launcher(config.hydra)
        self.jobs = JobContext(hydra_context, task_function, config)
        self.config = config
        self.max_members = max_members

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        self.jobs.begin()
        started = time.perf_counter()
        jobs = [self.jobs.compose(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        if not all(is_run_config(job.task_cfg) for job in jobs):  # another application's tasks: as the basic launcher
            return [self.jobs.run_alone(job) for job in jobs]
        devices = {}
        with exit_on_error("hreg"):  # every job's mistakes before anything trains
            for job in jobs:
                cfg = job.task_cfg
                validate(cfg)
                devices[job.index] = build_device(cfg.device)
        keys = [self.jobs.stack_key(job, str(devices[job.index])) for job in jobs]
        if not jobs:
            return []
        splits_per_member = len({data_key(job.task_cfg) for job in jobs}) / len(jobs)
        max_members = self.max_members or default_max_members(devices[jobs[0].index], splits_per_member)
        stacks = plan_stacks(keys, max_members)
        log.info("Launching %d jobs as %d stack%s (%s); their configs checked in %.1f s", len(jobs), len(stacks),
                 "" if len(stacks) == 1 else "s", ", ".join(str(len(s)) for s in stacks), time.perf_counter() - started)
        set_threads(self.config.threads, self.config.hydra)  # one process: every core it may use
        returns: dict[int, JobReturn] = {}
        for members in stacks:
            group = [jobs[i] for i in members]
            if len(group) == 1:
                returns[group[0].index] = self.jobs.run_alone(group[0])
            else:
                with stack_console():
                    returns.update(self._run_stack(group))
        return [returns[job.index] for job in jobs]

    def _run_stack(self, jobs: list[Job]) -> dict[int, JobReturn]:
        """Train the jobs as one stack. A mistake or a clean stop on a signal exits (one line, or 128 + signal),
        as it does for a native job; a failure of the stack fails each of its jobs."""
        members: list[Member] = []
        shared: dict[str, Splits] = {}
        failure: Exception | None = None
        try:
            with exit_on_error("hreg"):
                for job in jobs:
                    members.append(self.jobs.open(job, shared))
                log.info("stack of %d on %s: %s", len(members), members[0].ctx.device, ", ".join(j.name for j in jobs))
                try:
                    with env_override(jobs[0].env):  # the same for every job of the stack (its key)
                        fit_stack(members, seed=int(jobs[0].task_cfg.seed))
                except Interrupted as stop:
                    stop.resume = "resume each job with: hreg-resume JOB_DIR"
                    raise
        except Exception as error:  # not a user's mistake: this stack's jobs fail, the sweeper decides what follows
            failure = error
            log.error("stack of %d failed: %r", len(jobs), error)
        except BaseException:  # an exit (a mistake, a signal): the jobs' files closed, their directories let go
            for job, member in zip_longest(jobs, members):  # member None: not opened when the stack stopped
                self.jobs.release(job, member)
            raise
        return {job.index: self.jobs.close(job, member, failure) for job, member in zip_longest(jobs, members)}

    def pool(self, ask: Callable[[], Asked | str | None], tell: Callable[[Hashable, JobReturn], None],
             initial_job_idx: int) -> float:
        """Train the jobs ``ask`` gives, up to ``max_members`` at once, until it gives None; returns the
        occupancy (the mean share of ``max_members`` training while jobs remained to be asked). See pool.py."""
        self.jobs.begin()
        set_threads(self.config.threads, self.config.hydra)
        with stack_console():
            return Pool(self.jobs, ask, tell, initial_job_idx, self.max_members).train()
