"""``hydra/launcher=stacked``: a batch of jobs from any sweeper, trained as stacks in this process.

For each batch the sweeper hands over (the basic sweeper: the whole sweep) the
launcher composes every job's config,
checks them all, groups the jobs that can share a stack (grouping.py), and
runs each group: a group of one through Hydra's own ``run_job`` and the task
function (the native loop), a larger group through the stacked engine. For a
stacked job it does what ``run_job`` does: the job's directory, its ``.hydra``
files, its log file (``train.log``), Hydra's ``on_job_start`` and
``on_job_end`` callbacks, and a ``JobReturn`` with the job's objective for the
sweeper. Each job's directory ends up as a native run's would, with
``"launcher": "stacked"`` in its result file.

Another application's jobs (a config that is not an hreg run's, as in Hydra's
launcher test suites) each go through ``run_job``, one after the other.

hreg's Optuna sweeper hands over no batch: it calls ``pool``, which asks for a
job whenever a slot frees and trains the jobs as stacks that take turns.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.config_loader import ConfigLoader
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hreg import checkpoint, rundir
from hreg.build import build_context, build_hooks, resume_from_checkpoint
from hreg.config import is_run_config, validate, validate_launcher
from hreg.data import Splits, build_data
from hreg.device import build_device
from hreg.cli import exit_on_error
from hreg.engines.stacked.grouping import plan_stacks, stack_key
from hreg.engines.stacked.stack import Member, StackRun, fit_stack
from hreg.errors import UserError
from hreg.progress import LOG_FORMAT
from hreg.search.pool import LATER, Asked
from hreg.stops import Interrupted, deferred_signals
from hreg.threads import set_threads

log = logging.getLogger("hreg")

#: Memory a member of a stack takes beyond the data (weights, optimizer state, activations of a
#: training batch and of an evaluation chunk, its own copy of the model), measured with margin
#: (``benchmarks/bench_stacked.py``).
MEMORY_PER_MEMBER = 48 * 2**20
#: Memory of one split of MNIST on the device (train, validation and test images as float32).
MEMORY_PER_SPLIT = 230 * 2**20
#: On a CPU, bigger stacks than this train no faster per member (``benchmarks/bench_stacked.py``).
CPU_MEMBERS = 12
#: Seconds between two asks while the sweeper has no job to give now and nothing trains.
LATER_WAIT_S = 1.0




@dataclass
class Job:
    """One job of the batch: its number, overrides, full config (with ``hydra``) and run directory."""

    index: int
    overrides: list[str]
    config: DictConfig
    run_dir: Path
    resumed: bool = False  # an interrupted job of an earlier sweep, resumed in its own directory

    @functools.cached_property
    def task_cfg(self) -> DictConfig:
        """The config the task sees (without ``hydra``), as run_job gives it."""
        cfg = copy.deepcopy(self.config)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    @property
    def name(self) -> str:
        return f"job {self.index} ({' '.join(self.overrides) or 'defaults'})"


def default_max_members(device: torch.device, splits_per_member: float) -> int:
    """As many members as fit in half of the free memory of ``device`` (on a CPU, at most CPU_MEMBERS),
    each counting MEMORY_PER_MEMBER and its share of the data splits: ``splits_per_member`` is the
    batch's distinct splits over its jobs (1 in a sweep over seeds, where each seed has its own split)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    fit = max(1, int(0.5 * free // (MEMORY_PER_MEMBER + splits_per_member * MEMORY_PER_SPLIT)))
    return fit if device.type == "cuda" else min(fit, CPU_MEMBERS)


def data_key(cfg: DictConfig) -> str:
    """What decides a job's splits: its data config, resolved (``data.seed`` is ``${seed}`` by default)."""
    return OmegaConf.to_yaml(cfg.data, resolve=True)


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


class ComposedOnce:
    """A config loader that lets the launcher take the configs the sweeper has just composed.

    Hydra's basic sweeper composes every job of a batch to check it (``validate_batch_is_legal``),
    then hands the batch to the launcher, which would compose each job again: seconds for a study.
    This loader keeps a copy of what the check composed (a deep copy, far cheaper than composing);
    the launcher ``take``s it, or composes when no sweeper checked first.
    """

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.kept: dict[tuple[str, ...], DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        self.kept[tuple(sweep_overrides)] = copy.deepcopy(config)
        return config

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self.kept.pop(tuple(sweep_overrides), None)
        return kept if kept is not None else self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> object:  # everything else is the loader's
        return getattr(self.loader, name)


class StackedLaunch:
    """What the launcher plugin does with one batch of jobs."""

    def __init__(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig,
                 max_members: int | None) -> None:
        with exit_on_error("hreg"):
            validate_launcher(config.hydra)
        if not isinstance(hydra_context.config_loader, ComposedOnce):  # the sweeper's context too: it is shared
            hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.max_members = max_members

    def _compose(self, index: int, overrides: Sequence[str], resume: Path | None = None) -> Job:
        """The job's config as Hydra's basic launcher composes it, with its output directory resolved
        (``resume``: the directory of an earlier sweep's job that this one resumes)."""
        config = self.hydra_context.config_loader.take(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = index
            config.hydra.job.num = index
        HydraConfig.instance().set_config(config)
        run_dir = resume or Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).absolute()
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(config)
        return Job(index, list(overrides), config, run_dir, resumed=resume is not None)

    def _begin(self) -> None:
        """What Hydra's basic launcher does before its jobs: globals, logging, the sweep directory."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        self._begin()
        started = time.perf_counter()
        jobs = [self._compose(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        if not all(is_run_config(job.task_cfg) for job in jobs):  # another application's tasks: as the basic launcher
            return [self._run_alone(job) for job in jobs]
        devices = {}
        with exit_on_error("hreg"):  # every job's mistakes before anything trains
            for job in jobs:
                cfg = job.task_cfg
                validate(cfg)
                devices[job.index] = build_device(cfg.device)
        keys = [stack_key(job.task_cfg, str(devices[job.index])) for job in jobs]
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
                returns[group[0].index] = self._run_alone(group[0])
            else:
                with stack_console():
                    returns.update(self._run_stack(group))
        return [returns[job.index] for job in jobs]

    def _run_alone(self, job: Job) -> JobReturn:
        """A job that stacks with no other: Hydra's own run_job and the task function (the native loop)."""
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=job.config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _start_job(self, job: Job, shared: dict[str, Splits]) -> Member:
        """What run_job does before the task (directory, .hydra files, log file, on_job_start); the member."""
        HydraConfig.instance().set_config(job.config)
        rundir.acquire(job.run_dir)
        if job.config.hydra.output_subdir is not None:
            hydra_dir = job.run_dir / str(job.config.hydra.output_subdir)
            hydra_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(job.task_cfg, hydra_dir / "config.yaml")
            OmegaConf.save(copy.deepcopy(HydraConfig.instance().cfg), hydra_dir / "hydra.yaml")
            OmegaConf.save(job.config.hydra.overrides.task, hydra_dir / "overrides.yaml")
        member_log = logging.Logger("hreg", logging.INFO)  # outside the hierarchy: this job's file only
        handler = logging.FileHandler(job.run_dir / f"{job.config.hydra.job.name}.log", mode="a")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        member_log.addHandler(handler)
        self.hydra_context.callbacks.on_job_start(config=job.config, task_function=self.task_function)
        cfg = job.task_cfg
        key = data_key(cfg)
        if key not in shared:  # runs with the same data config share the splits
            shared[key] = build_data(cfg.data, build_device(cfg.device))
        ctx = build_context(cfg, job.run_dir, log=member_log, hydra=job.config.hydra, data=shared[key])
        first_epoch, random_state = 1, None
        if job.resumed:  # the model, optimizer and record of its last checkpoint; the stack's random state then
            state = checkpoint.load(checkpoint.checkpoint_dir(job.run_dir) / checkpoint.LAST, ctx.device)
            first_epoch = resume_from_checkpoint(ctx, state)
            random_state = [state["rng"]["torch"].cpu(), *([state["rng"]["cuda"].cpu()] if "cuda" in state["rng"] else [])]
        ctx.result.set_extra("launcher", "stacked")
        return Member(job.name, ctx, build_hooks(ctx), first_epoch, random_state)

    def _end_job(self, job: Job, member: Member | None, failure: Exception | None) -> JobReturn:
        """What run_job does after the task: a JobReturn with the objective (or the failure), on_job_end."""
        HydraConfig.instance().set_config(job.config)
        ret = JobReturn(overrides=job.overrides, cfg=job.task_cfg, hydra_cfg=copy.deepcopy(HydraConfig.instance().cfg),
                        working_dir=os.getcwd(), task_name=JobRuntime.instance().get("name"))
        if failure is None and member is not None and member.failure is not None:
            failure = member.failure  # this member failed alone
        if failure is None and member is not None:
            ret.status, ret.return_value = JobStatus.COMPLETED, member.ctx.result.objective_value()
            member.ctx.log.info("%s", member.ctx.result.summary(job.run_dir))
            log.info("%s: %s", job.name, member.ctx.result.summary(job.run_dir))
        else:
            ret.status, ret.return_value = JobStatus.FAILED, failure
        self.hydra_context.callbacks.on_job_end(config=job.config, job_return=ret)
        return ret

    def _run_stack(self, jobs: list[Job]) -> dict[int, JobReturn]:
        """Train the jobs as one stack. A mistake or a clean stop on a signal exits (one line, or 128 + signal),
        as it does for a native job; a failure of the stack fails each of its jobs."""
        members: list[Member] = []
        shared: dict[str, Splits] = {}
        failure: Exception | None = None
        try:
            with exit_on_error("hreg"):
                for job in jobs:
                    members.append(self._start_job(job, shared))
                log.info("stack of %d on %s: %s", len(members), members[0].ctx.device, ", ".join(j.name for j in jobs))
                try:
                    fit_stack(members, seed=int(jobs[0].task_cfg.seed))
                except Interrupted as stop:
                    stop.resume = "resume each job with: hreg-resume JOB_DIR"
                    raise
        except Exception as error:  # not a user's mistake: this stack's jobs fail, the sweeper decides what follows
            failure = error
            log.error("stack of %d failed: %r", len(jobs), error)
        except BaseException:  # an exit (a mistake, a signal): the jobs' files closed, their directories let go
            for i, job in enumerate(jobs):
                self._close_job(job, members[i] if i < len(members) else None)
            raise
        returns = {job.index: self._end_job(job, members[i] if i < len(members) else None, failure)
                   for i, job in enumerate(jobs)}
        for i, job in enumerate(jobs):
            self._close_job(job, members[i] if i < len(members) else None)
        return returns

    @staticmethod
    def _close_job(job: Job, member: Member | None) -> None:
        """The job's log file closed and its directory let go."""
        if member is not None:
            for handler in member.ctx.log.handlers:
                handler.close()
        rundir.release(job.run_dir)

    # --- a pool of stacks, for a search ------------------------------------------------------------

    def pool(self, ask: Callable[[], Asked | str | None], tell: Callable[[Hashable, JobReturn], None],
             initial_job_idx: int) -> float:
        """Train the jobs ``ask`` gives, up to ``max_members`` at once, until it gives None; returns the
        occupancy (the mean share of ``max_members`` training while jobs remained to be asked).

        Whenever members end, new jobs are asked at once and start as a new stack
        (one per stack key), trained by turns with the running stacks, each stack
        with its own random state: a member's run does not depend on when others
        joined. ``tell`` hears each job's return as soon as its member ends, so
        the sampler knows every ended trial before the next is asked. A job that
        cannot stack trains alone (Hydra's ``run_job``) while the pool waits.
        A signal ends every member interrupted, after the epoch of the stack it
        is in; the sweep's trials stay running for the same command to resume.
        ``ask`` gives (key, overrides, None) for a new job, or (key, overrides,
        RUN_DIR) for a job of an earlier sweep that resumes from its checkpoint
        in RUN_DIR, as a stack of its own.
        """
        self._begin()
        set_threads(self.config.threads, self.config.hydra)
        pool = Pool(self, ask, tell, initial_job_idx)
        with stack_console():
            return pool.run()


class Pool:
    """The slots of a pool sweep (``StackedLaunch.pool``): the running stacks, and the jobs they train."""

    def __init__(self, launch: StackedLaunch, ask: Callable[[], Asked | str | None],
                 tell: Callable[[Hashable, JobReturn], None], initial_job_idx: int) -> None:
        self.launch, self.ask, self.tell = launch, ask, tell
        self.index = initial_job_idx
        self.max_members: int | None = launch.max_members
        self.runs: list[StackRun] = []
        self.jobs: dict[int, tuple[Hashable, Job]] = {}  # by id(member)
        self.shared: dict[str, Splits] = {}
        self.asking = True
        self.samples: list[float] = []  # members training / max_members, at each turn while asking

    @property
    def training(self) -> int:
        return sum(len(run) for run in self.runs)

    def run(self) -> float:
        started = time.perf_counter()
        with deferred_signals() as stop_request:
            try:
                while True:
                    self.fill()
                    if not self.runs:
                        break
                    if self.asking:
                        self.samples.append(self.training / self.max_members)
                    for run in list(self.runs):
                        self.ended(run.step())
                        if run.done:
                            run.close()
                            self.runs.remove(run)
                        stop_request.check(run.epoch)
            except BaseException as failure:
                for run in self.runs:
                    for member in run.stop(failure):
                        _, job = self.jobs.pop(id(member))
                        self.launch._close_job(job, member)
                    run.close()
                raise
        occupancy = sum(self.samples) / len(self.samples) if self.samples else 1.0
        log.info("pool of %s slots: %d jobs in %.1f s; occupancy %.0f%% while jobs remained to be asked",
                 self.max_members, self.index, time.perf_counter() - started, 100 * occupancy)
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
                if self.runs or new:
                    break
                time.sleep(LATER_WAIT_S)
                continue
            key, overrides, resume = asked
            job = self.launch._compose(self.index, overrides, resume)
            self.index += 1
            try:
                cfg = job.task_cfg
                validate(cfg)
                device = build_device(cfg.device)
            except UserError as error:  # a sampled job's mistake fails that job only
                log.error("%s: %s", job.name, error)
                self.tell(key, self.launch._end_job(job, None, error))
                continue
            if self.max_members is None:
                self.max_members = default_max_members(device, 1.0)
                log.info("pool of %d slots on %s", self.max_members, device)
            new.append((key, job, stack_key(cfg, str(device))))
        groups: dict[Hashable, list[tuple[Hashable, Job]]] = {}
        for key, job, stack in new:
            if job.resumed and stack is None:
                error = RuntimeError(f"{job.run_dir}: a job that cannot stack is not resumed in a pool")
                log.error("%s: %s", job.name, error)
                self.tell(key, self.launch._end_job(job, None, error))
            elif stack is None:  # cannot share a stack: alone, now
                self.tell(key, self.launch._run_alone(job))
            elif job.resumed:  # a stack of its own, from its checkpoint's epoch
                self.start([(key, job)])
            else:
                groups.setdefault(stack, []).append((key, job))
        for group in groups.values():
            self.start(group)

    def start(self, group: list[tuple[Hashable, Job]]) -> None:
        members: list[Member] = []
        try:
            for key, job in group:
                member = self.launch._start_job(job, self.shared)
                members.append(member)
                self.jobs[id(member)] = (key, job)
        except Exception as error:  # not a user's mistake: these jobs fail, the sweep goes on
            log.error("a stack of %d could not start: %r", len(group), error)
            for i, (key, job) in enumerate(group):
                member = members[i] if i < len(members) else None
                if member is not None:
                    self.jobs.pop(id(member))
                self.launch._close_job(job, member)
                self.tell(key, self.launch._end_job(job, None, error))
            return
        log.info("stack of %d joins the pool (%d training): %s", len(members), self.training + len(members),
                 ", ".join(job.name for _, job in group))
        run = StackRun(members, seed=int(group[0][1].task_cfg.seed), own_random_state=True, console=False)
        self.runs.append(run)
        self.ended(run.ended)

    def ended(self, members: list[Member]) -> None:
        for member in members:
            key, job = self.jobs.pop(id(member))
            ret = self.launch._end_job(job, member, None)
            self.launch._close_job(job, member)
            self.tell(key, ret)
