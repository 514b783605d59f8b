"""The pool of stacks that hreg's sweeper trains its trials on (``StackedLaunch.pool``).

Whenever members end, new jobs are asked at once and start as a new stack (one
per stack key), trained by turns with the running stacks, each stack with its
own random state: a member's run does not depend on when others joined.
``tell`` hears each job's return as soon as its member ends, so the sampler
knows every ended trial before the next is asked. A job that cannot stack
trains alone (Hydra's ``run_job``) while the pool waits. A signal ends every
member interrupted, after the epoch of the stack it is in; the sweep's trials
stay running for the same command to resume. ``ask`` gives (key, overrides,
None) for a new job, or (key, overrides, RUN_DIR) for a job of an earlier sweep
that resumes from its checkpoint in RUN_DIR, as a stack of its own; ``LATER``
when none can be had now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from itertools import zip_longest

from hydra.core.utils import JobReturn, env_override

from hreg.config import validate
from hreg.data import Splits
from hreg.device import build_device
from hreg.engines.stacked.grouping import default_max_members
from hreg.engines.stacked.job import Job, JobContext
from hreg.engines.stacked.stack import Member, StackRun
from hreg.errors import UserError
from hreg.search.pool import LATER, Asked
from hreg.stops import deferred_signals

log = logging.getLogger("hreg")

#: Seconds between two asks while the sweeper has no job to give now and nothing trains.
LATER_WAIT_S = 1.0


class Pool:
    """The slots of a pool sweep: the running stacks, and the jobs their members train."""

    def __init__(self, jobs: JobContext, ask: Callable[[], Asked | str | None],
                 tell: Callable[[Hashable, JobReturn], None], initial_job_idx: int, max_members: int | None) -> None:
        self.jobs, self.ask, self.tell = jobs, ask, tell
        self.index = initial_job_idx
        self.max_members = max_members
        self.stacks: dict[StackRun, dict[str, str]] = {}  # the running stacks, each with its jobs' environment
        self.members: dict[Member, tuple[Hashable, Job]] = {}  # each training member's key and job
        self.shared: dict[str, Splits] = {}
        self.asking = True
        self.samples: list[float] = []  # members training / max_members, at each turn while asking

    @property
    def training(self) -> int:
        return sum(len(stack) for stack in self.stacks)

    def train(self) -> float:
        """Train until no job remains; returns the occupancy while jobs remained to be asked."""
        started = time.perf_counter()
        with deferred_signals() as stop_request:
            try:
                while True:
                    self.fill()
                    if not self.stacks:
                        break
                    if self.asking:
                        self.samples.append(self.training / self.max_members)
                    for stack, env in list(self.stacks.items()):
                        with env_override(env):
                            self.ended(stack.step())
                        if stack.done:
                            stack.close()
                            del self.stacks[stack]
                        stop_request.check(stack.epoch)
            except BaseException as failure:
                for stack in self.stacks:
                    for member in stack.stop(failure):
                        self.jobs.release(self.members.pop(member)[1], member)
                    stack.close()
                raise
        occupancy = sum(self.samples) / len(self.samples) if self.samples else 1.0
        slots = "no slots (no job could start)" if self.max_members is None else f"{self.max_members} slots"
        log.info("pool of %s: %d jobs in %.1f s; occupancy %.0f%% while jobs remained to be asked",
                 slots, self.index, time.perf_counter() - started, 100 * occupancy)
        return occupancy

    def fill(self) -> None:
        """Ask jobs until every slot is taken (or none remain), and start them as new stacks."""
        new: list[tuple[Hashable, Job, Hashable | None]] = []
        while self.asking and (self.max_members is None or self.training + len(new) < self.max_members):
            asked = self.ask()
            if asked is None:
                self.asking = False
                break
            if asked == LATER:  # none to be had now: train on, or wait when nothing trains
                if self.stacks or new:
                    break
                time.sleep(LATER_WAIT_S)
                continue
            key, overrides, resume = asked
            job = self.jobs.compose(self.index, overrides, resume)
            self.index += 1
            try:
                cfg = job.task_cfg
                validate(cfg)
                device = build_device(cfg.device)
            except UserError as error:  # a sampled job's mistake fails that job only
                log.error("%s: %s", job.name, error)
                self.tell(key, self.jobs.close(job, None, error))
                continue
            if self.max_members is None:
                self.max_members = default_max_members(device, 1.0)
                log.info("pool of %d slots on %s", self.max_members, device)
            new.append((key, job, self.jobs.stack_key(job, str(device))))
        groups: dict[Hashable, list[tuple[Hashable, Job]]] = {}
        for key, job, stack in new:
            if job.resumed and stack is None:
                error = RuntimeError(f"{job.run_dir}: a job that cannot stack is not resumed in a pool")
                log.error("%s: %s", job.name, error)
                self.tell(key, self.jobs.close(job, None, error))
            elif stack is None:  # cannot share a stack: alone, now
                self.tell(key, self.jobs.run_alone(job))
            elif job.resumed:  # a stack of its own, from its checkpoint's epoch
                self.start([(key, job)])
            else:
                groups.setdefault(stack, []).append((key, job))
        for group in groups.values():
            self.start(group)

    def start(self, group: list[tuple[Hashable, Job]]) -> None:
        """The group's jobs opened as the members of a new stack (all of them failed, if one cannot be)."""
        members: list[Member] = []
        try:
            for key, job in group:
                member = self.jobs.open(job, self.shared)
                members.append(member)
                self.members[member] = (key, job)
        except Exception as error:  # not a user's mistake: these jobs fail, the sweep goes on
            log.error("a stack of %d could not start: %r", len(group), error)
            for (key, job), member in zip_longest(group, members):  # member None: not opened
                if member is not None:
                    del self.members[member]
                self.tell(key, self.jobs.close(job, member, error))
            return
        log.info("stack of %d joins the pool (%d training): %s", len(members), self.training + len(members),
                 ", ".join(job.name for _, job in group))
        env = group[0][1].env  # the same for every job of the stack (its key)
        with env_override(env):
            stack = StackRun(members, seed=int(group[0][1].task_cfg.seed), own_random_state=True, console=False)
        self.stacks[stack] = env
        self.ended(stack.ended)

    def ended(self, members: list[Member]) -> None:
        """Each ended member's job closed, and its return told."""
        for member in members:
            key, job = self.members.pop(member)
            self.tell(key, self.jobs.close(job, member, None))
