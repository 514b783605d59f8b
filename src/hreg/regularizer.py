"""The `regularizer` config group: weight penalties added to the data loss.

L1: ``lam * sum |w|``; L2: ``lam * sum w**2`` (the squared Euclidean norm, no
factor 1/2). Both sum over the weight matrices of every Linear layer, the
classifier included; biases and normalisation parameters are not penalised,
as is customary (they do not control the capacity the penalty aims at).
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("none", "l1", "l2")


class WeightPenalty:
    """``penalty(model)`` is the term to add to the loss for that model."""

    def __init__(self, kind: str = "none", lam: float = 0.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.lam = float(lam)

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.lam > 0

    def __call__(self, model: nn.Module) -> torch.Tensor:
        weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        if not self.active:
            return weights[0].new_zeros(())
        if self.kind == "l1":
            total = sum(w.abs().sum() for w in weights)
        else:
            total = sum(w.pow(2).sum() for w in weights)
        return self.lam * total

    def __repr__(self) -> str:
        return f"WeightPenalty(kind={self.kind!r}, lam={self.lam:g})"
