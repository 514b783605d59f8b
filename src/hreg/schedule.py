"""When things happen in a run: the batches of an epoch, the epochs that are evaluated, the learning rate.

Every engine trains and evaluates on this schedule, so that a run's record has
the same evaluations and steps whatever trained it. The learning rate is a pure
function of the epoch (no scheduler state), so that a resumed run, a stack's
member and a Lightning run all step with the same rate at the same epoch.
"""

from __future__ import annotations

import math

import torch

#: ``lr_schedule`` options: the optimizer's lr throughout, or half a cosine wave from it toward 0 over the
#: run's epochs (torch's CosineAnnealingLR stepped once an epoch, eta_min 0; Loshchilov & Hutter's SGDR
#: without restarts). At a fixed budget of epochs the smaller late steps settle the weights: 0.1 to 0.3
#: points more validation accuracy for the best augmented MLP found by hand (benchmarks/README.md).
LR_SCHEDULES = ("constant", "cosine")


def is_eval_epoch(epoch: int, epochs: int, every: int) -> bool:
    """Evaluate at the first and last epoch and every ``every`` epochs (epochs count from 1)."""
    return epoch == 1 or epoch == epochs or epoch % every == 0


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over ``n`` shuffled images.

    A last batch of a single image is skipped (BatchNorm cannot train on one
    image, and one image is no batch); with a fresh order every epoch, each
    image is still seen. Batches of one throughout (``batch_size=1``) stay.
    """
    stop = n - 1 if n % batch_size == 1 and n > batch_size else n
    return [(start, min(start + batch_size, stop)) for start in range(0, stop, batch_size)]


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (from 1) as a fraction of the optimizer's configured lr."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Each param group's lr: its ``initial_lr`` (torch's schedulers' key, set at the first call from the
    configured lr, and saved with the optimizer's state) times ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
