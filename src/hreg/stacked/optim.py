"""One optimizer step for every member of a stack, each with its own hyperparameters.

torch.optim takes one learning rate per parameter group, and Adam cannot fake a
member's learning rate by scaling its gradient (its step is scale-invariant).
So a stack's step works on its one buffer of parameters (``FlatParameters``),
row by row of members: Adam and AdamW through torch's own fused kernels, called
on each run of members that share their numbers, SGD written out with a column
of numbers. A test checks them against torch's own optimizers. ``export`` gives
a member's state in torch's format, so its checkpoint resumes in the native loop.
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
    """Adam, AdamW or SGD over a stack's parameters (one (K, P) buffer: ``FlatParameters``).

    Adam and AdamW run torch's own fused kernels (one pass over the rows they update), once for each
    run of consecutive members with the same numbers: a stack of one configuration is one call, a
    search with a learning rate per trial one call a member. SGD is written out with a column of
    per-member numbers (three operations over the buffer).
    """

    def __init__(self, configs: Sequence[DictConfig], params: FlatParameters) -> None:
        self.kind = configs[0]._target_
        self.settings = [{**DEFAULTS[self.kind], **{k: v for k, v in c.items() if k in SUPPORTED[self.kind]}}
                         for c in configs]
        self.params = params
        self._columns()
        # A tensor on the device, so that a step captured in a CUDA graph counts on at every replay.
        self.steps = torch.zeros((), dtype=params.data.dtype, device=params.data.device)
        self.state = [torch.zeros_like(params.data) for _ in range(1 if self.kind == "torch.optim.SGD" else 2)]

    def _columns(self) -> None:
        """The members' numbers as the step uses them (decided here, not per step: no synchronisation)."""
        data = self.params.data

        def column(key: str) -> torch.Tensor:  # one number a member, broadcast along its row
            return torch.tensor([s[key] for s in self.settings], dtype=data.dtype, device=data.device).view(-1, 1)

        if self.kind == "torch.optim.SGD":
            self.lr, self.weight_decay, self.momentum = column("lr"), column("weight_decay"), column("momentum")
            self._decay = any(s["weight_decay"] != 0 for s in self.settings)
            return
        self.runs: list[tuple[slice, dict[str, Any]]] = []  # (rows, their settings)
        for k, settings in enumerate(self.settings):
            if self.runs and self.runs[-1][1] == settings:
                self.runs[-1] = (slice(self.runs[-1][0].start, k + 1), settings)
            else:
                self.runs.append((slice(k, k + 1), settings))

    @torch.no_grad()
    def step(self) -> None:
        self.steps.add_(1)
        p, grad = self.params.data, self.params.grad
        if self.kind == "torch.optim.SGD":
            if self._decay:
                grad.add_(self.weight_decay * p)  # the gradient buffer is zeroed before the next backward pass
            buf = self.state[0]
            buf.mul_(self.momentum).add_(grad)  # torch starts the buffer at the first gradient: 0 * m + g is the same
            p.addcmul_(buf, -self.lr)
            return
        fused = torch._fused_adamw_ if self.kind == "torch.optim.AdamW" else torch._fused_adam_
        exp_avg, exp_avg_sq = self.state
        for rows, s in self.runs:
            fused([p[rows]], [grad[rows]], [exp_avg[rows]], [exp_avg_sq[rows]], [], [self.steps],
                  lr=s["lr"], beta1=s["betas"][0], beta2=s["betas"][1], weight_decay=s["weight_decay"],
                  eps=s["eps"], amsgrad=False, maximize=False)

    def keep(self, members: torch.Tensor, params: FlatParameters) -> None:
        """Only these members go on; ``params`` are the stack's new parameters."""
        self.params = params
        self.state = [s[members] for s in self.state]
        self.settings = [self.settings[i] for i in members.tolist()]
        self._columns()

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def export(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        """Member k's state into ``optimizer`` (torch's, over the member's own MLP, parameters in the same order)."""
        own = [p for group in optimizer.param_groups for p in group["params"]]
        states = [self.params.views(s) for s in self.state]
        for i, p in enumerate(own):
            state: dict[str, Any]
            if self.kind == "torch.optim.SGD":
                state = {"momentum_buffer": states[0][i][k].clone() if self.settings[k]["momentum"] > 0 else None}
            else:
                state = {
                    "step": self.steps.detach().clone(),  # on the device: no synchronisation here
                    "exp_avg": states[0][i][k].clone(),
                    "exp_avg_sq": states[1][i][k].clone(),
                }
            optimizer.state[p] = state
