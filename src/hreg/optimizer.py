"""The `optimizer` config group: a torch.optim class configured in YAML."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Instantiate the configured optimizer (a ``_partial_`` target) over the model's parameters."""
    return instantiate(cfg)(model.parameters())
