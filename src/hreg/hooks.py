"""What a run shares with the code that watches it (TensorBoard, checkpoints, sweep pruning).

The loop in run.py calls each hook at fixed points; a hook may read anything in
the RunContext and may stop the run by raising a StopRun subclass, whose
``status`` then goes into the result file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from hreg.data import Splits
from hreg.loop import Augment, EpochStats
from hreg.regularizer import WeightPenalty


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    penalty: WeightPenalty
    augment: Augment | None
    data: Splits
    result: dict[str, Any] = field(default_factory=dict)


class Hook:
    """Base class: override what you need; every method does nothing by default."""

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        """Before the first epoch trained in this process (``first_epoch`` > 1 after a resume)."""

    def on_epoch_end(self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None) -> None:
        """After each epoch; ``metrics`` is set on evaluation epochs."""

    def on_end(self, ctx: RunContext) -> None:
        """Once, whatever the run's status (also after a failure or an interrupt)."""
