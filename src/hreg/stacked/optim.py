"""One optimizer step for every member of a stack, each with its own hyperparameters.

torch.optim takes one learning rate per parameter group, and Adam cannot fake a
member's learning rate by scaling its gradient (its step is scale-invariant).
So the update rules of ``torch.optim.Adam``, ``AdamW`` and ``SGD`` are written
here once more, over the stack's one buffer of parameters (``FlatParameters``:
about ten operations a step for every member and layer together), with every
number (lr, betas, eps, weight decay, momentum) a column of one value per
member. They follow torch's implementations operation by operation (Adam's in
its capturable form, the step size folded into the denominator); a test checks
them against torch's own optimizers. ``export`` gives a member's state in
torch's format, so its checkpoint resumes in the native loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from hreg.stacked.flat import FlatParameters

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
    """Adam, AdamW or SGD over a stack's parameters (one (K, P) buffer: ``FlatParameters``)."""

    def __init__(self, configs: Sequence[DictConfig], params: FlatParameters) -> None:
        self.kind = configs[0]._target_
        device = params.data.device
        settings = [{**DEFAULTS[self.kind], **{k: v for k, v in c.items() if k in SUPPORTED[self.kind]}} for c in configs]

        def column(values: list[float]) -> torch.Tensor:  # one number a member, broadcast along its row
            return torch.tensor(values, dtype=params.data.dtype, device=device).view(-1, 1)

        self.lr = column([s["lr"] for s in settings])
        self.weight_decay = column([s["weight_decay"] for s in settings])
        if self.kind == "torch.optim.SGD":
            self.momentum = column([s["momentum"] for s in settings])
            self.has_momentum = [s["momentum"] > 0 for s in settings]
        else:
            self.beta1 = column([s["betas"][0] for s in settings])
            self.beta2 = column([s["betas"][1] for s in settings])
            self.eps = column([s["eps"] for s in settings])
        self.params = params
        self._decide()
        # A tensor on the device, so that a step captured in a CUDA graph counts on at every replay.
        self.steps = torch.zeros((), dtype=params.data.dtype, device=device)
        self.state = [torch.zeros_like(params.data) for _ in range(1 if self.kind == "torch.optim.SGD" else 2)]

    def _decide(self) -> None:
        """Whether any member decays its weights (decided here, not per step: no synchronisation in a step)."""
        self._decay = bool((self.weight_decay != 0).any())

    @torch.no_grad()
    def step(self) -> None:
        self.steps.add_(1)
        p, grad = self.params.data, self.params.grad
        if self._decay and self.kind != "torch.optim.AdamW":
            grad.add_(self.weight_decay * p)  # the gradient buffer is zeroed before the next backward pass
        if self.kind == "torch.optim.SGD":
            buf = self.state[0]
            buf.mul_(self.momentum).add_(grad)  # torch starts the buffer at the first gradient: 0 * m + g is the same
            p.addcmul_(buf, -self.lr)
            return
        if self._decay:
            p.mul_(1 - self.lr * self.weight_decay)
        exp_avg, exp_avg_sq = self.state
        exp_avg.lerp_(grad, 1 - self.beta1)
        exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad * (1 - self.beta2))
        # torch's capturable Adam: the (negative) step size folded into the denominator
        step_size_neg = -self.lr / (1 - self.beta1**self.steps)
        bias_correction2_sqrt = (1 - self.beta2**self.steps).sqrt()
        denom = (exp_avg_sq.sqrt() / (bias_correction2_sqrt * step_size_neg)).add_(self.eps / step_size_neg)
        p.addcdiv_(exp_avg, denom)

    def keep(self, members: torch.Tensor, params: FlatParameters) -> None:
        """Only these members go on; ``params`` are the stack's new parameters."""
        self.params = params
        self.state = [s[members] for s in self.state]
        for name in ("lr", "weight_decay", "momentum", "beta1", "beta2", "eps"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name)[members])
        self._decide()
        if hasattr(self, "has_momentum"):
            self.has_momentum = [self.has_momentum[i] for i in members.tolist()]

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def export(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        """Member k's state into ``optimizer`` (torch's, over the member's own MLP, parameters in the same order)."""
        own = [p for group in optimizer.param_groups for p in group["params"]]
        states = [self.params.views(s) for s in self.state]
        for i, p in enumerate(own):
            state: dict[str, Any]
            if self.kind == "torch.optim.SGD":
                state = {"momentum_buffer": states[0][i][k].clone() if self.has_momentum[k] else None}
            else:
                state = {
                    "step": self.steps.detach().clone(),  # on the device: no synchronisation here
                    "exp_avg": states[0][i][k].clone(),
                    "exp_avg_sq": states[1][i][k].clone(),
                }
            optimizer.state[p] = state
