"""What a run shares with the code that watches it (TensorBoard, checkpoints, early stopping, pruning).

Every engine calls each hook at the same points, through ``lifecycle.Lifecycle``.
A hook may read anything in the RunContext, add its own entries to the run
record with ``ctx.result.set_extra``, and stop the run by raising a
``stops.StopRun``, whose ``status`` the record keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from hreg.augment import Augment
from hreg.data import Splits
from hreg.metrics import Probe, prediction_entropy, probe, probe_set
from hreg.regularizer import WeightPenalty
from hreg.result import RunResult


@dataclass
class EpochStats:
    """Means over the epoch's batches, as the optimiser saw them (train mode, augmented)."""

    data_loss: float
    penalty: float

    @property
    def loss(self) -> float:
        return self.data_loss + self.penalty

    @classmethod
    def from_sums(cls, sums: torch.Tensor, batches: int) -> list[EpochStats]:
        """From sums (2, runs) or (2,) over an epoch's batches: the epoch's one host-device synchronisation."""
        means = (sums / batches).reshape(2, -1).T.tolist()
        return [cls(data, penalty) for data, penalty in means]


@dataclass(eq=False)  # a run is equal only to itself (and hashed so)
class RunContext:
    """One run's built parts, its record, and where it writes."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    penalty: WeightPenalty
    augment: Augment | None
    data: Splits
    result: RunResult
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hreg"))
    #: The job's Hydra config (the ``hydra`` node, as ``HydraConfig.get()`` gives it), for the hooks that
    #: talk to a sweeper; None outside Hydra (``hreg-resume``, tests).
    hydra: DictConfig | None = None
    #: Where the snapshot measurements come from when the engine holds the weights elsewhere (the stacked
    #: engine measures all its members at once); None: from ``model``.
    prober: Callable[[], Probe] | None = None

    def probe(self) -> Probe:
        """The model's input gradients and prediction entropy, for a snapshot."""
        if self.prober is not None:
            return self.prober()
        return probe(self.model, self.data, self.cfg.data.batch_size)

    def entropy(self) -> torch.Tensor:
        """The model's prediction entropy on the probe set."""
        if self.prober is not None:
            return self.prober().entropy
        return prediction_entropy(self.model, probe_set(self.data).x)


class Hook:
    """Base class: override what you need; every method does nothing by default."""

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        """Before the first epoch trained in this process (``first_epoch`` > 1 after a resume)."""

    def needs_model(self, epoch: int, improved: bool) -> bool:
        """Whether ``on_epoch_end`` reads the model or optimizer at this epoch.

        The stacked engine copies a member's weights out of the stack only then.
        """
        return False

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        """After each epoch; ``metrics`` is set on evaluation epochs, ``improved`` when they beat the best so far."""

    def judge(self, ctx: RunContext, epoch: int) -> None:
        """After every run that trains alongside this one has ended ``epoch`` (``on_epoch_end``): raise a
        ``StopRun`` to stop the run here. For a decision that compares runs (an Optuna pruner), so that it
        does not depend on the order in which a stack's members report."""

    def on_end(self, ctx: RunContext) -> None:
        """Once, whatever the run's status (also after a failure or an interrupt)."""
