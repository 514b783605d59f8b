"""One run, from a composed config to a result: the task function behind train.py.

Flow: validate the config -> build device, regularizer, augmentation, model,
optimizer and data -> train with periodic evaluation -> write ``result.json``
in the run directory -> return the validation objective (for sweepers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hreg.config import ConfigError, validate
from hreg.data import build_data
from hreg.device import build_device
from hreg.hooks import Hook, RunContext
from hreg.loop import StopRun, evaluate_all, is_eval_epoch, train_epoch
from hreg.mnist import DataError
from hreg.monitor import PROBE_SIZE, prediction_entropy, weight_stats
from hreg.optimizer import build_optimizer
from hreg.progress import Progress

log = logging.getLogger("hreg")

RESULT_FILE = "result.json"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file, a crash never leaves one."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(payload, indent=2, allow_nan=True))
    os.replace(partial, path)


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
    """The watchers of a run, as the config asks for them."""
    hooks: list[Hook] = []
    if cfg.get("monitor"):
        hooks.append(instantiate(cfg.monitor))
    return hooks


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build everything from ``cfg``, train, and return the result record (also in result.json)."""
    ctx = build_context(cfg, run_dir)
    hooks = build_hooks(cfg)
    log.info(
        "data: %d train / %d val / %d test on %s | %s | %s",
        len(ctx.data.train), len(ctx.data.val), len(ctx.data.test), ctx.device, ctx.penalty,
        type(ctx.optimizer).__name__,
    )
    result = ctx.result
    result.update(
        status="running",
        objective=cfg.objective,
        device=str(ctx.device),
        config=OmegaConf.to_container(cfg, resolve=True),
        epochs=cfg.epochs,
        epochs_completed=0,
        history=[],
        best=None,
        final=None,
    )
    first_epoch = 1
    started = time.perf_counter()
    progress = Progress(cfg.epochs, first_epoch)
    try:
        for hook in hooks:
            hook.on_start(ctx, first_epoch)
        for epoch in range(first_epoch, cfg.epochs + 1):
            stats = train_epoch(ctx.model, ctx.data.train, cfg.data.batch_size, ctx.optimizer, ctx.penalty, ctx.augment)
            result["epochs_completed"] = epoch
            metrics = None
            if is_eval_epoch(epoch, cfg.epochs, cfg.eval_every):
                metrics = {"epoch": epoch, **evaluate_all(ctx.model, ctx.data), "penalty": stats.penalty}
                _record(result, metrics, cfg.objective)
                result["wall_time_s"] = time.perf_counter() - started
                write_json(run_dir / RESULT_FILE, result)
            for hook in hooks:
                hook.on_epoch_end(ctx, epoch, stats, metrics)
            progress.epoch_done(epoch, metrics)
        result["status"] = "completed"
        _record_final_state(ctx)
    except StopRun as stop:
        result["status"] = stop.status
        result["error"] = str(stop)
        log.error("run stopped (%s) after epoch %d: %s", stop.status, result["epochs_completed"], stop)
    except BaseException as error:
        result["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        result["error"] = repr(error)
        raise
    finally:
        progress.close()
        for hook in hooks:
            hook.on_end(ctx)
        result["wall_time_s"] = time.perf_counter() - started
        write_json(run_dir / RESULT_FILE, result)
    return result


def _record_final_state(ctx: RunContext) -> None:
    """What the weights and predictions look like at the end (read by reports)."""
    probe = ctx.data.val if len(ctx.data.val) else ctx.data.test
    ctx.result["weights"] = weight_stats(ctx.model)
    ctx.result["entropy_mean"] = prediction_entropy(ctx.model, probe.x[:PROBE_SIZE]).mean().item()


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


def run(cfg: DictConfig, run_dir: Path) -> float:
    """The task function: one training run; a user's mistake exits with one line, code 2."""
    try:
        validate(cfg)
        result = train(cfg, run_dir)
    except (ConfigError, DataError) as error:
        print(f"hreg: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        log.warning("interrupted; partial result in %s", run_dir / RESULT_FILE)
        sys.exit(130)
    log.info("%s", summary_line(result, run_dir))
    return objective_value(cfg.objective, result["final"])
