"""One run, from a composed config to a result: the task function behind train.py.

Flow: validate the config -> build device, regularizer, augmentation, model,
optimizer and data -> train with periodic evaluation -> write ``result.json``
in the run directory -> return the validation objective (for sweepers).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hreg import checkpoint
from hreg.atomic import write_atomic
from hreg.checkpoint import CheckpointError, CheckpointHook
from hreg.config import ConfigError, validate
from hreg.data import build_data
from hreg.device import build_device
from hreg.hooks import Hook, RunContext
from hreg.loop import StopRun, evaluate_all, is_eval_epoch, train_epoch
from hreg.mnist import DataError
from hreg.monitor import prediction_entropy, probe_set, weight_stats
from hreg.optimizer import build_optimizer
from hreg.progress import Progress
from hreg.stopping import EarlyStopping, Interrupted, deferred_interrupts
from hreg.sweep import trial_hooks

log = logging.getLogger("hreg")

RESULT_FILE = "result.json"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file, a crash never leaves one."""
    write_atomic(path, json.dumps(payload, indent=2, allow_nan=True).encode())


def objective_value(objective: str, metrics: dict[str, float] | None) -> float:
    """The number a sweeper optimises: final validation accuracy or loss (NaN if none)."""
    if not metrics:
        return math.nan
    return metrics[objective]


def build_context(cfg: DictConfig, run_dir: Path) -> RunContext:
    """Every builder, in the order that reports a user's mistake before any slow work."""
    device = build_device(cfg.device)
    penalty = instantiate(cfg.regularizer)
    augment = instantiate(cfg.augment)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device)
    optimizer = build_optimizer(cfg.optimizer, model)
    data = build_data(cfg.data, device)
    return RunContext(cfg, run_dir, device, model, optimizer, penalty, augment, data)


def build_hooks(cfg: DictConfig) -> list[Hook]:
    """The watchers of a run, as the config asks for them.

    Checkpoints come before the hooks that may stop the run (early stopping,
    pruning), so the epoch a run stops at still gets its ``best.pt``.
    """
    hooks: list[Hook] = []
    if cfg.get("monitor"):
        hooks.append(instantiate(cfg.monitor))
    hooks.append(CheckpointHook(cfg.checkpoint.every))
    if cfg.early_stopping.patience:
        hooks.append(EarlyStopping(cfg.early_stopping.patience))
    hooks.extend(trial_hooks(cfg))  # an Optuna sweep's job: report to its trial, stop when pruned
    return hooks


def train(cfg: DictConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Build everything from ``cfg``, train, and return the result record (also in result.json).

    With ``resume``, the run continues from ``run_dir``'s last checkpoint.
    """
    ctx = build_context(cfg, run_dir)
    hooks = build_hooks(cfg)
    result = ctx.result
    first_epoch, elapsed_before = _begin(ctx, resume)
    log.info(
        "data: %d train / %d val / %d test on %s | %s | %s",
        len(ctx.data.train), len(ctx.data.val), len(ctx.data.test), ctx.device, ctx.penalty,
        type(ctx.optimizer).__name__,
    )
    started = time.perf_counter()
    progress = Progress(cfg.epochs, first_epoch)
    try:
        with deferred_interrupts() as stop_request:
            for hook in hooks:
                hook.on_start(ctx, first_epoch)
            for epoch in range(first_epoch, cfg.epochs + 1):
                stats = train_epoch(ctx.model, ctx.data.train, cfg.data.batch_size, ctx.optimizer, ctx.penalty, ctx.augment)
                result["epochs_completed"] = epoch
                result["wall_time_s"] = elapsed_before + time.perf_counter() - started
                metrics = None
                if is_eval_epoch(epoch, cfg.epochs, cfg.eval_every):
                    metrics = {"epoch": epoch, **evaluate_all(ctx.model, ctx.data), "penalty": stats.penalty}
                    _record(result, metrics, cfg.objective)
                    write_json(run_dir / RESULT_FILE, result)
                for hook in hooks:
                    hook.on_epoch_end(ctx, epoch, stats, metrics)
                progress.epoch_done(epoch, metrics)
                stop_request.check(epoch)
            result["status"] = "completed"
    except StopRun as stop:
        result["status"] = stop.status
        result["error"] = str(stop)
        if isinstance(stop, Interrupted):
            result["exit_code"] = 128 + stop.signum
        log.warning("run stopped (%s) with %d epochs completed: %s", stop.status, result["epochs_completed"], stop)
    except BaseException as error:
        # Mid-epoch: the model is between two states, so no checkpoint is taken (the last periodic one stands).
        result["status"] = "aborted" if isinstance(error, KeyboardInterrupt) else "failed"
        result["error"] = repr(error)
        raise
    finally:
        progress.close()
        if result["status"] in checkpoint.CLEAN_ENDS:
            _record_final_state(ctx)
        result["wall_time_s"] = elapsed_before + time.perf_counter() - started
        for hook in hooks:
            hook.on_end(ctx)
        write_json(run_dir / RESULT_FILE, result)
    return result


def _begin(ctx: RunContext, resume: bool) -> tuple[int, float]:
    """A fresh result record, or the state of the last checkpoint; returns (first epoch, seconds already spent)."""
    cfg, result = ctx.cfg, ctx.result
    if resume:
        state = checkpoint.load(checkpoint.checkpoint_dir(ctx.run_dir) / checkpoint.LAST, ctx.device)
        first_epoch = checkpoint.restore(ctx, state)
        result.setdefault("resumed_at_epoch", []).append(first_epoch)
        for stale in ("error", "exit_code"):  # of the stop being resumed from
            result.pop(stale, None)
        log.info("resuming %s at epoch %d", ctx.run_dir, first_epoch)
        elapsed_before = result["wall_time_s"]
    else:
        first_epoch, elapsed_before = 1, 0.0
        result.update(
            objective=cfg.objective,
            config=OmegaConf.to_container(cfg, resolve=True),
            epochs=cfg.epochs,
            epochs_completed=0,
            history=[],
            best=None,
            final=None,
        )
    result.update(status="running", device=str(ctx.device))
    return first_epoch, elapsed_before


def _record_final_state(ctx: RunContext) -> None:
    """What the weights and predictions look like at the end (read by reports)."""
    ctx.result["weights"] = weight_stats(ctx.model)
    ctx.result["entropy_mean"] = prediction_entropy(ctx.model, probe_set(ctx).x).mean().item()


def _record(result: dict[str, Any], metrics: dict[str, float], objective: str) -> None:
    result["history"].append(metrics)
    result["final"] = metrics
    if result["best"] is None or _better(objective, metrics, result["best"]):
        result["best"] = metrics


def _better(objective: str, metrics: dict[str, float], best: dict[str, float]) -> bool:
    if objective == "val_loss":
        return metrics["val_loss"] < best["val_loss"]
    return metrics["val_acc"] > best["val_acc"]


def summary_line(result: dict[str, Any], run_dir: Path) -> str:
    final, best = result["final"] or {}, result["best"] or {}
    return (
        f"{result['status']}: best val acc {best.get('val_acc', math.nan):.4f} (epoch {best.get('epoch', '-')}), "
        f"final val acc {final.get('val_acc', math.nan):.4f}, test acc {final.get('test_acc', math.nan):.4f}, "
        f"{result['wall_time_s']:.1f}s, run dir {run_dir}"
    )


def run(cfg: DictConfig, run_dir: Path, resume: bool = False) -> float:
    """The task function: one training run; a user's mistake exits with one line, code 2.

    An interrupted run exits with 128 + the signal's number, after saving a
    checkpoint that ``hreg-resume RUN_DIR`` continues from.
    """
    try:
        validate(cfg)
        result = train(cfg, run_dir, resume)
    except (ConfigError, DataError, CheckpointError) as error:
        print(f"hreg: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        log.warning("aborted; resume from the last periodic checkpoint with: hreg-resume %s", run_dir)
        sys.exit(130)
    log.info("%s", summary_line(result, run_dir))
    if result["status"] == "interrupted":
        log.warning("resume with: hreg-resume %s", run_dir)
        sys.exit(result["exit_code"])
    if result["status"] == "diverged":
        return math.nan  # never a sweeper's best, whatever its last good evaluation said
    return objective_value(cfg.objective, result["final"])
