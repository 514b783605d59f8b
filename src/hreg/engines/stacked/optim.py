"""One optimizer step for every member of a stack, each with its own hyperparameters.

torch.optim takes one learning rate per parameter group, and Adam cannot fake a
member's learning rate by scaling its gradient (its step is scale-invariant).
So a stack's step calls torch's own fused kernels (those of ``torch.optim.Adam``,
``AdamW`` and ``SGD`` with ``fused=True``) on the rows of each block of members
that share their numbers; a test checks them against torch's optimizers.
``export`` gives a member's state in torch's format, so its checkpoint resumes
in the native loop; ``load`` takes it back, for a member that resumes in a stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from hreg.engines.stacked.model import blocks
from hreg.schedule import set_lr

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
    """Adam, AdamW or SGD over a stack's parameters (tensors (K, ...), member k in row k), through torch's
    fused kernels: one call for each block of consecutive members with the same numbers, on those rows
    of every tensor (a stack of one configuration is one call; a search with a learning rate per trial,
    one call a member)."""

    def __init__(self, configs: Sequence[DictConfig], params: Sequence[torch.Tensor]) -> None:
        self.kind = configs[0]._target_
        self.settings = [{**DEFAULTS[self.kind], **{k: v for k, v in c.items() if k in SUPPORTED[self.kind]}}
                         for c in configs]
        self.params = list(params)
        # A tensor on the device, so that a step captured in a CUDA graph counts on at every replay.
        self.steps = torch.zeros((), dtype=self.params[0].dtype, device=self.params[0].device)
        self.lr_factor = 1.0  # every member's lr times this (``schedule.lr_factor``: the members share their epochs)
        slots = 1 if self.kind == "torch.optim.SGD" else 2  # momentum buffers; Adam's two averages
        self.state = [[torch.zeros_like(p) for p in self.params] for _ in range(slots)]
        self._blocks()

    def _blocks(self) -> None:
        """Runs of consecutive members with the same numbers: (rows, their settings)."""
        self.blocks = blocks(self.settings)

    @torch.no_grad()
    def step(self) -> None:
        self.steps.add_(1)
        steps = [self.steps] * len(self.params)  # read by the kernels, counted here once
        for rows, s in self.blocks:
            params = [p[rows] for p in self.params]
            grads = [p.grad[rows] for p in self.params]
            state = [[t[rows] for t in slot] for slot in self.state]
            lr = s["lr"] * self.lr_factor
            if self.kind == "torch.optim.SGD":  # zero buffers: the first step gives g, as torch's first step does
                buffers = state[0] if s["momentum"] > 0 else []
                torch._fused_sgd_(params, grads, buffers, weight_decay=s["weight_decay"], momentum=s["momentum"],
                                  lr=lr, dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
                continue
            fused = torch._fused_adamw_ if self.kind == "torch.optim.AdamW" else torch._fused_adam_
            fused(params, grads, state[0], state[1], [], steps, lr=lr, beta1=s["betas"][0],
                  beta2=s["betas"][1], weight_decay=s["weight_decay"], eps=s["eps"], amsgrad=False, maximize=False)

    def keep(self, members: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Only these members go on; ``params`` are the stack's new parameters."""
        self.params = list(params)
        self.state = [[t[members] for t in slot] for slot in self.state]
        self.settings = [self.settings[i] for i in members.tolist()]
        self._blocks()

    def zero_grad(self) -> None:
        """Gradients to None: the next backward pass hands over fresh ones (no pass over a buffer)."""
        for p in self.params:
            p.grad = None

    def load(self, k: int, optimizer: torch.optim.Optimizer, owned: Sequence[int]) -> None:
        """Member k's state from ``optimizer`` (torch's, as a checkpoint restored it): ``export`` reversed.
        The stack's step count becomes the member's (the members of a stack share one)."""
        own = [p for group in optimizer.param_groups for p in group["params"]]
        for i, p in zip(owned, own, strict=True):
            state = optimizer.state.get(p, {})
            if self.kind == "torch.optim.SGD":
                if state.get("momentum_buffer") is not None:
                    self.state[0][i][k].copy_(state["momentum_buffer"])
                continue
            if "step" in state:
                self.state[0][i][k].copy_(state["exp_avg"])
                self.state[1][i][k].copy_(state["exp_avg_sq"])
                self.steps.fill_(float(state["step"]))

    def export(self, k: int, optimizer: torch.optim.Optimizer, owned: Sequence[int]) -> None:
        """Member k's state into ``optimizer`` (torch's, over the member's own MLP); ``owned``: the
        positions of its parameters among the stack's (``StackedMLP.owned``), and its current learning rate."""
        set_lr(optimizer, self.lr_factor)
        own = [p for group in optimizer.param_groups for p in group["params"]]
        for i, p in zip(owned, own, strict=True):
            state: dict[str, Any]
            if self.kind == "torch.optim.SGD":
                state = {"momentum_buffer": self.state[0][i][k].clone() if self.settings[k]["momentum"] > 0 else None}
            else:
                state = {
                    "step": self.steps.detach().clone(),  # on the device: no synchronisation here
                    "exp_avg": self.state[0][i][k].clone(),
                    "exp_avg_sq": self.state[1][i][k].clone(),
                }
            optimizer.state[p] = state
