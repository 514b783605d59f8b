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
from hreg.loop import Diverged, evaluate_all, is_eval_epoch, train_epoch
from hreg.mnist import DataError
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


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build everything from ``cfg``, train, and return the result record."""
    device = build_device(cfg.device)
    penalty = instantiate(cfg.regularizer)
    augment = instantiate(cfg.augment)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device)
    optimizer = build_optimizer(cfg.optimizer, model)
    data = build_data(cfg.data, device)
    log.info(
        "data: %d train / %d val / %d test on %s | %s | %s",
        len(data.train), len(data.val), len(data.test), device, penalty, type(optimizer).__name__,
    )

    result: dict[str, Any] = {
        "status": "running",
        "objective": cfg.objective,
        "device": str(device),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "epochs": cfg.epochs,
        "epochs_completed": 0,
        "history": [],
        "best": None,
        "final": None,
    }
    started = time.perf_counter()
    progress = Progress(cfg.epochs)
    try:
        for epoch in range(1, cfg.epochs + 1):
            stats = train_epoch(model, data.train, cfg.data.batch_size, optimizer, penalty, augment)
            result["epochs_completed"] = epoch
            metrics = None
            if is_eval_epoch(epoch, cfg.epochs, cfg.eval_every):
                metrics = {"epoch": epoch, **evaluate_all(model, data), "penalty": stats.penalty}
                result["history"].append(metrics)
                result["final"] = metrics
                if result["best"] is None or _better(cfg.objective, metrics, result["best"]):
                    result["best"] = metrics
            progress.epoch_done(epoch, metrics)
        result["status"] = "completed"
    except Diverged as error:
        result["status"] = "diverged"
        result["error"] = str(error)
        log.error("run diverged at epoch %d: %s", result["epochs_completed"] + 1, error)
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        raise
    finally:
        progress.close()
        result["wall_time_s"] = time.perf_counter() - started
        write_json(run_dir / RESULT_FILE, result)
    return result


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
