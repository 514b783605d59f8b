"""The training loop: epochs of shuffled batches over device-resident tensors.

Read it top to bottom like nanoGPT's: an epoch is a random permutation sliced
into batches; each batch is (optionally) augmented, goes forward in train mode,
and its loss (cross-entropy + weight penalty) goes backward. Evaluation runs in
eval mode under no_grad on whole splits, every ``eval_every`` epochs and at the
first and last epoch. No DataLoader: the data already sits on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hreg.data import Split, Splits
from hreg.regularizer import WeightPenalty

Augment = Callable[[torch.Tensor], torch.Tensor]

EVAL_CHUNK = 20000  # rows per forward pass in evaluation: bounds memory on big splits


class StopRun(Exception):
    """Ends a run early; ``status`` is what the result file records."""

    status = "stopped"


class Diverged(StopRun):
    """The training loss became NaN or infinite."""

    status = "diverged"


@dataclass
class EpochStats:
    """Means over the epoch's batches, as the optimiser saw them (train mode, augmented)."""

    data_loss: float
    penalty: float

    @property
    def loss(self) -> float:
        return self.data_loss + self.penalty


def train_epoch(
    model: nn.Module,
    train: Split,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    penalty: WeightPenalty,
    augment: Augment | None = None,
) -> EpochStats:
    """One pass over ``train`` in a fresh random order; raises Diverged on a non-finite loss."""
    model.train()
    order = torch.randperm(len(train), device=train.y.device)
    data_sum = train.x.new_zeros(())
    penalty_sum = train.x.new_zeros(())
    batches = 0
    for start in range(0, len(train), batch_size):
        index = order[start : start + batch_size]
        x, y = train.x[index], train.y[index]
        if augment is not None:
            x = augment(x)
        data_loss = F.cross_entropy(model(x), y)
        penalty_term = penalty(model)
        optimizer.zero_grad(set_to_none=True)
        (data_loss + penalty_term).backward()
        optimizer.step()
        data_sum += data_loss.detach()
        penalty_sum += penalty_term.detach()
        batches += 1
    stats = EpochStats(data_sum.item() / batches, penalty_sum.item() / batches)
    if not math.isfinite(stats.loss):
        raise Diverged(f"training loss is {stats.loss} (data {stats.data_loss}, penalty {stats.penalty})")
    return stats


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits for ``x`` in eval mode (the caller's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in x.split(EVAL_CHUNK)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model on a whole split, in eval mode."""
    if len(split) == 0:
        return math.nan, math.nan
    logits = predict(model, split.x)
    loss = F.cross_entropy(logits, split.y).item()
    accuracy = (logits.argmax(dim=1) == split.y).float().mean().item()
    return loss, accuracy


def evaluate_all(model: nn.Module, data: Splits) -> dict[str, float]:
    """Loss and accuracy on train, val and test: keys like ``val_loss``, ``test_acc``."""
    metrics = {}
    for name in ("train", "val", "test"):
        metrics[f"{name}_loss"], metrics[f"{name}_acc"] = evaluate(model, getattr(data, name))
    return metrics


def is_eval_epoch(epoch: int, epochs: int, every: int) -> bool:
    """Evaluate at the first and last epoch and every ``every`` epochs (epochs count from 1)."""
    return epoch == 1 or epoch == epochs or epoch % every == 0
