"""One optimizer step for every member of a stack, each with its own hyperparameters.

torch.optim takes one learning rate per parameter group, and Adam cannot fake a
member's learning rate by scaling its gradient (its step is scale-invariant).
So the update rules of ``torch.optim.Adam``, ``AdamW`` and ``SGD`` are written
here once more, over stacked tensors, with every number (lr, betas, eps,
weight decay, momentum) a tensor of one value per member. They follow torch's
single-tensor implementations operation by operation; a test checks them
against torch's own optimizers. ``export`` gives a member's state in torch's
format, so its checkpoint resumes in the native loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

#: The optimizer classes a stack can train, and the keys each may set (others keep torch's defaults).
SUPPORTED = {
    "torch.optim.Adam": {"lr", "betas", "eps", "weight_decay"},
    "torch.optim.AdamW": {"lr", "betas", "eps", "weight_decay"},
    "torch.optim.SGD": {"lr", "momentum", "weight_decay"},
}
DEFAULTS = {
    "torch.optim.Adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "torch.optim.AdamW": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
    "torch.optim.SGD": {"momentum": 0.0, "weight_decay": 0.0},
}
#: Keys that may be present with these values only (torch's defaults).
NEUTRAL = {"_target_": None, "_partial_": True, "amsgrad": False, "maximize": False, "nesterov": False,
           "dampening": 0.0, "foreach": None, "capturable": False, "differentiable": False, "fused": None}


def stackable(cfg: DictConfig) -> bool:
    """Whether a stack can train with this ``optimizer`` config (a class above, supported keys only)."""
    allowed = SUPPORTED.get(cfg.get("_target_"))
    if allowed is None:
        return False
    return all(key in allowed or (key in NEUTRAL and (NEUTRAL[key] is None or value == NEUTRAL[key]))
               for key, value in cfg.items())


class StackedOptimizer:
    """Adam, AdamW or SGD over stacked parameters (leading dimension: the member)."""

    def __init__(self, configs: Sequence[DictConfig], params: Sequence[torch.Tensor]) -> None:
        self.kind = configs[0]._target_
        device = params[0].device
        settings = [{**DEFAULTS[self.kind], **{k: v for k, v in c.items() if k in SUPPORTED[self.kind]}} for c in configs]

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=params[0].dtype, device=device)

        self.lr = column([s["lr"] for s in settings])
        self.weight_decay = column([s["weight_decay"] for s in settings])
        if self.kind == "torch.optim.SGD":
            self.momentum = column([s["momentum"] for s in settings])
            self.has_momentum = [s["momentum"] > 0 for s in settings]
        else:
            self.beta1 = column([s["betas"][0] for s in settings])
            self.beta2 = column([s["betas"][1] for s in settings])
            self.eps = column([s["eps"] for s in settings])
        self.params = list(params)
        # A tensor on the device, so that a step captured in a CUDA graph counts on at every replay.
        self.steps = torch.zeros((), dtype=params[0].dtype, device=device)
        self.state = [[torch.zeros_like(p) for p in self.params] for _ in range(1 if self.kind == "torch.optim.SGD" else 2)]

    @staticmethod
    def _per_member(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return value.view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self) -> None:
        self.steps.add_(1)
        for i, p in enumerate(self.params):
            grad = p.grad
            if self.kind == "torch.optim.SGD":
                self._sgd(i, p, grad)
            else:
                self._adam(i, p, grad)

    def _sgd(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        lr, wd, momentum = (self._per_member(v, p) for v in (self.lr, self.weight_decay, self.momentum))
        grad = grad + wd * p
        buf = self.state[0][i]
        buf.mul_(momentum).add_(grad)  # torch starts the buffer at the first gradient: 0 * m + g is the same
        p.sub_(lr * buf)

    def _adam(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        lr, wd, beta1, beta2, eps = (
            self._per_member(v, p) for v in (self.lr, self.weight_decay, self.beta1, self.beta2, self.eps)
        )
        if self.kind == "torch.optim.AdamW":
            p.mul_(1 - lr * wd)
        else:
            grad = grad + wd * p
        exp_avg, exp_avg_sq = self.state[0][i], self.state[1][i]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad * (1 - beta2))
        step_size = lr / (1 - beta1**self.steps)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**self.steps).sqrt()).add_(eps)
        p.sub_(step_size * exp_avg / denom)

    def keep(self, members: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Only these members go on; ``params`` are the stack's new tensors (same order)."""
        self.params = list(params)
        self.state = [[s[members].clone() for s in group] for group in self.state]
        for name in ("lr", "weight_decay", "momentum", "beta1", "beta2", "eps"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name)[members])
        if hasattr(self, "has_momentum"):
            self.has_momentum = [self.has_momentum[i] for i in members.tolist()]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def export(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        """Member k's state into ``optimizer`` (torch's, over the member's own MLP, parameters in the same order)."""
        own = [p for group in optimizer.param_groups for p in group["params"]]
        for i, p in enumerate(own):
            state: dict[str, Any]
            if self.kind == "torch.optim.SGD":
                state = {"momentum_buffer": self.state[0][i][k].clone() if self.has_momentum[k] else None}
            else:
                state = {
                    "step": self.steps.detach().clone(),  # on the device: no synchronisation here
                    "exp_avg": self.state[0][i][k].clone(),
                    "exp_avg_sq": self.state[1][i][k].clone(),
                }
            optimizer.state[p] = state
