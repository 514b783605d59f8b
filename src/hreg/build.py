"""Builders: a composed config becomes a RunContext (device, penalty, augmentation, model, optimizer, data,
run record) and the hooks that watch the run. Each config group's own module builds its part."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hreg import checkpoint
from hreg.checkpoint import CheckpointHook
from hreg.data import Splits, build_data
from hreg.device import build_device
from hreg.hooks import Hook, RunContext
from hreg.optimizer import build_optimizer
from hreg.result import RunResult
from hreg.early_stopping import EarlyStopping


def new_result(cfg: DictConfig, device: torch.device) -> RunResult:
    """The record of a run that has not trained yet."""
    return RunResult(
        objective=cfg.objective,
        config=OmegaConf.to_container(cfg, resolve=True),
        epochs=cfg.epochs,
        device=str(device),
    )


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    """The model, initialised from ``cfg.seed`` (the same weights for the same seed, whatever trains it)."""
    torch.manual_seed(cfg.seed)
    return instantiate(cfg.model).to(device)


def build_context(
    cfg: DictConfig,
    run_dir: Path,
    log: logging.Logger | None = None,
    hydra: DictConfig | None = None,
    data: Splits | None = None,
) -> RunContext:
    """Every builder, in the order that reports a user's mistake before any slow work.

    ``data``: splits already on the device (runs of one stack with the same ``data`` config share them).
    """
    device = build_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    penalty = instantiate(cfg.regularizer)
    augment = instantiate(cfg.augment)
    model = build_model(cfg, device)
    optimizer = build_optimizer(cfg.optimizer, model)
    data = data if data is not None else build_data(cfg.data, device)
    ctx = RunContext(cfg, run_dir, device, model, optimizer, penalty, augment, data, new_result(cfg, device), hydra=hydra)
    if log is not None:
        ctx.log = log
    return ctx


def build_hooks(ctx: RunContext) -> list[Hook]:
    """The watchers of a run, as the config asks for them.

    Checkpoints come before the hooks that may stop the run (early stopping,
    pruning), so the epoch a run stops at still gets its ``best.pt``.
    """
    cfg = ctx.cfg
    hooks: list[Hook] = []
    if cfg.get("monitor"):
        hooks.append(instantiate(cfg.monitor))
    hooks.append(CheckpointHook(cfg.checkpoint.every))
    if cfg.early_stopping.patience:
        hooks.append(EarlyStopping(cfg.early_stopping.patience))
    if ctx.hydra is not None:
        from hreg.search.trial import trial_hooks  # an Optuna sweep's job: report to its trial, stop when pruned

        hooks.extend(trial_hooks(ctx))
    return hooks


def resume_from_checkpoint(ctx: RunContext, state: dict | None = None) -> int:
    """Put ``ctx`` back where its last checkpoint (or ``state``, read from it) left it; returns the first
    epoch still to train."""
    if state is None:
        state = checkpoint.load(checkpoint.checkpoint_dir(ctx.run_dir) / checkpoint.LAST, ctx.device)
    first_epoch = checkpoint.restore(ctx, state)
    ctx.result.resumed(first_epoch)
    ctx.result.device = str(ctx.device)
    ctx.log.info("resuming %s at epoch %d", ctx.run_dir, first_epoch)
    return first_epoch
