"""A stacked job opened and closed as Hydra's ``run_job`` does, for the batch launcher and the pool alike.

``run_job`` runs a task function from its start to its end; the members of a
stack train by turns in one process, so their jobs cannot go through it.
``JobContext`` takes its steps around the stack instead, in its order: the
job's config set as Hydra's (``HydraConfig``), its directory held, its
``.hydra`` files, its log file as ``hydra/job_logging`` says (``job_log``),
``on_job_start`` within ``hydra.job.env_set``; at the end a ``JobReturn`` with
the objective and ``on_job_end``; then its log closed and its directory let go.

What one process cannot give each of its members keeps a job out of stacks
(``stack_key``): ``hydra.job.chdir=true`` (one working directory per process)
sends a job through ``run_job`` alone; jobs stack only with jobs of the same
``hydra.job.env_set``, and their stack trains inside it (``env``).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, env_override, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hreg import checkpoint, rundir
from hreg.build import build_context, build_hooks, resume_from_checkpoint
from hreg.data import Splits, build_data
from hreg.device import build_device
from hreg.engines.stacked import grouping
from hreg.engines.stacked.stack import Member

log = logging.getLogger("hreg")


@dataclass
class Job:
    """One job: its number, overrides, full config (with ``hydra``) and run directory."""

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

    @property
    def env(self) -> dict[str, str]:
        """``hydra.job.env_set``: the environment the job's task runs in."""
        return {str(k): str(v) for k, v in (OmegaConf.select(self.config, "hydra.job.env_set") or {}).items()}


def job_log(config: DictConfig) -> logging.Logger:
    """The job's own logger, outside the logging hierarchy (a stack's members share one process): a handler
    for each file handler its ``hydra.job_logging`` names, in that handler's format and level; none when
    it names none (``hydra/job_logging=disabled``). Hydra's default gives ``JOB_DIR/<job name>.log``."""
    logger = logging.Logger("hreg", logging.INFO)
    settings = OmegaConf.to_container(config.hydra.job_logging, resolve=True) or {}  # file names from hydra.runtime
    formats = settings.get("formatters") or {}
    for handler in (settings.get("handlers") or {}).values():
        cls = get_class(handler["class"])
        if not issubclass(cls, logging.FileHandler):
            continue
        file = cls(**{k: v for k, v in handler.items() if k not in ("class", "formatter", "level", "filters")})
        form = formats.get(handler.get("formatter"), {})
        file.setFormatter(logging.Formatter(form.get("format"), form.get("datefmt"), form.get("style", "%")))
        file.setLevel(handler.get("level", logging.NOTSET))
        logger.addHandler(file)
    return logger


class JobContext:
    """Opens and closes the jobs of one launcher, as ``run_job`` would (see the module's docstring)."""

    def __init__(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def begin(self) -> None:
        """What Hydra's basic launcher does before its jobs: globals, logging, the sweep directory."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def compose(self, index: int, overrides: Sequence[str], resume: Path | None = None) -> Job:
        """The job's config as Hydra's basic launcher composes it, with its output directory resolved
        (``resume``: the directory of an earlier sweep's job that this one resumes)."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = index
            config.hydra.job.num = index
        HydraConfig.instance().set_config(config)
        run_dir = resume or Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).absolute()
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(config)
        return Job(index, list(overrides), config, run_dir, resumed=resume is not None)

    @staticmethod
    def stack_key(job: Job, device: str) -> Hashable | None:
        """What must be equal for two jobs to share a stack (``grouping.stack_key`` and the job's
        environment); None for a job that trains alone."""
        key = grouping.stack_key(job.task_cfg, device)
        if key is None:
            return None
        if OmegaConf.select(job.config, "hydra.job.chdir"):
            log.info("%s: hydra.job.chdir=true needs a process of its own: it trains alone", job.name)
            return None
        return key, tuple(sorted(job.env.items()))

    def run_alone(self, job: Job) -> JobReturn:
        """A job that stacks with no other: Hydra's own run_job and the task function (the native loop)."""
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=job.config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def open(self, job: Job, shared: dict[str, Splits]) -> Member:
        """What run_job does before the task (directory, .hydra files, log file, on_job_start); the member.
        ``shared``: the splits of the jobs opened so far, by their data config (runs of one data config share them)."""
        HydraConfig.instance().set_config(job.config)
        rundir.acquire(job.run_dir)
        if job.config.hydra.output_subdir is not None:
            hydra_dir = job.run_dir / str(job.config.hydra.output_subdir)
            hydra_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(job.task_cfg, hydra_dir / "config.yaml")
            OmegaConf.save(copy.deepcopy(HydraConfig.instance().cfg), hydra_dir / "hydra.yaml")
            OmegaConf.save(job.config.hydra.overrides.task, hydra_dir / "overrides.yaml")
        member_log = job_log(job.config)
        with env_override(job.env):
            self.hydra_context.callbacks.on_job_start(config=job.config, task_function=self.task_function)
            cfg = job.task_cfg
            key = grouping.data_key(cfg)
            if key not in shared:
                shared[key] = build_data(cfg.data, build_device(cfg.device))
            ctx = build_context(cfg, job.run_dir, log=member_log, hydra=job.config.hydra, data=shared[key])
            first_epoch, random_state = 1, None
            if job.resumed:  # the model, optimizer and record of its last checkpoint; the stack's random state then
                state = checkpoint.load(checkpoint.checkpoint_dir(job.run_dir) / checkpoint.LAST, ctx.device)
                first_epoch = resume_from_checkpoint(ctx, state)
                random_state = [state["rng"]["torch"].cpu(), *([state["rng"]["cuda"].cpu()] if "cuda" in state["rng"] else [])]
            ctx.result.set_extra("launcher", "stacked")
            return Member(job.name, ctx, build_hooks(ctx), first_epoch, random_state)

    def close(self, job: Job, member: Member | None, failure: Exception | None) -> JobReturn:
        """What run_job does after the task: a JobReturn with the objective (or the failure), on_job_end;
        then the job's log closed and its directory let go (``release``)."""
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
        try:
            self.hydra_context.callbacks.on_job_end(config=job.config, job_return=ret)
        finally:
            self.release(job, member)
        return ret

    @staticmethod
    def release(job: Job, member: Member | None) -> None:
        """The job's log files closed and its directory let go, with no return (the process exits)."""
        if member is not None:
            for handler in member.ctx.log.handlers:
                handler.close()
        rundir.release(job.run_dir)
