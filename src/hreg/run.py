"""One run, from a composed config to its objective: the task function behind train.py.

validate -> build -> fit -> save -> return the objective, in the shape of
lightning-hydra-template's ``train.py``. Mistakes and interrupts are raised
(``UserError``, ``stops.Interrupted``); the entry point turns them into exit codes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from hreg.build import build_context, build_hooks, resume_from_checkpoint
from hreg.cluster import hand_over, requeued
from hreg.config import validate
from hreg.engines import engine_name, fit
from hreg.result import RunResult
from hreg.rundir import RunDirLock, is_worker_process
from hreg.stops import Interrupted
from hreg.threads import set_threads

log = logging.getLogger("hreg")


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, hydra: DictConfig | None = None) -> RunResult:
    """Build everything from ``cfg`` and train; the record is also in ``run_dir/result.json``.

    With ``resume``, the run continues from ``run_dir``'s last checkpoint.
    """
    ctx = build_context(cfg, run_dir, hydra=hydra)
    first_epoch = resume_from_checkpoint(ctx) if resume else 1
    ctx.log.info(
        "data: %d train / %d val / %d test on %s | %s | %s",
        len(ctx.data.train), len(ctx.data.val), len(ctx.data.test), ctx.device, ctx.penalty,
        type(ctx.optimizer).__name__,
    )
    try:
        fit(ctx, build_hooks(ctx), first_epoch)
    except Interrupted:
        log.info("%s", ctx.result.summary(run_dir))
        raise
    return ctx.result


def run(cfg: DictConfig, run_dir: Path, resume: bool = False, hydra: DictConfig | None = None) -> float:
    """The task function: one training run in ``run_dir``, which it holds for itself while it trains.

    Returns the validation objective (NaN for a diverged run). An interrupted
    run raises ``Interrupted`` after saving a checkpoint that ``hreg-resume``
    continues from; a submitit job requeued by its scheduler continues from it
    by itself (``cluster.requeued``).
    """
    validate(cfg)
    threads = cfg.get("threads") or "auto"  # none in the configs of runs saved before the setting
    log.info("threads: %d (threads=%s)", set_threads(threads, hydra), threads)
    try:
        with RunDirLock(run_dir):
            if not resume and requeued(run_dir):
                if engine_name(cfg) == "lightning":
                    log.warning("requeued: engine=lightning starts its run again from epoch 1")
                else:
                    log.info("requeued: the run goes on from its last checkpoint")
                    resume = True
            result = train(cfg, run_dir, resume, hydra)
    except Interrupted as stop:
        stop.resume = (f"its Lightning checkpoints are in {run_dir}/checkpoints" if engine_name(cfg) == "lightning"
                       else f"resume with: hreg-resume {run_dir}")
        hand_over(stop)
        raise
    except KeyboardInterrupt:
        log.warning("aborted; resume from the last periodic checkpoint with: hreg-resume %s", run_dir)
        raise
    if is_worker_process():  # a distributed run's worker: the first process reports (and keeps the record)
        return result.objective_value()
    log.info("%s", result.summary(run_dir))
    return result.objective_value()
