"""Training epochs as CUDA graphs (``train.cuda_graph``): captured once, replayed every epoch.

On a GPU an epoch of this small MLP is a few hundred tiny kernels, and the GPU
spends most of the epoch waiting for Python to launch them. Captured as one
CUDA graph, the whole epoch (every batch: gather, augmentation, forward,
backward, optimizer step) is launched with a single call. What changes from
epoch to epoch comes in through static buffers: the batch order is drawn
eagerly and copied into the graph's ``order`` buffer before each replay; the
random draws inside the graph (dropout, augmentation) are new at every replay,
as CUDA graphs advance the generator's offset on each one. Evaluation, hooks
and the once-an-epoch NaN check stay outside the graph.

Capturing needs a warm-up on a side stream (it creates the optimizer's state
and the libraries' workspaces) and the capture itself runs the epoch once more
without executing it; both would change the run, so everything training
changes is saved first and put back afterwards: the first replay is the run's
next epoch, as the eager loop would have trained it (up to float rounding).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

#: The torch optimizers whose state, zeroed, is their fresh state (so that a capture can be undone).
GRAPHABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
#: Those of them that keep their step count on the device when capturable (and may be configured fused).
CAPTURABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


class EpochGraph:
    """``run(order)`` (an epoch of training batches over ``order``, returning its sums on the device) as a graph.

    ``state`` gives the tensors training changes (parameters, buffers, optimizer state); ``fresh`` those
    that did not exist before the warm-up, whose fresh value is zero.
    """

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        order: torch.Tensor,
        state: Callable[[], Sequence[torch.Tensor]],
    ) -> None:
        device = order.device
        self.order = order.clone()
        before = {id(t): t.detach().clone() for t in state()}
        rng = torch.cuda.get_rng_state(device)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "capturable=True but not captured": this step is the warm-up
                run(self.order)  # warm-up: optimizer state, allocator, cuBLAS workspaces
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.sums = run(self.order)
        finally:
            with torch.no_grad():  # undo the warm-up: back to the state before it (a failed capture too)
                for tensor in state():
                    saved = before.get(id(tensor))
                    tensor.copy_(saved) if saved is not None else tensor.zero_()
            torch.cuda.set_rng_state(rng, device)

    def __call__(self, order: torch.Tensor) -> torch.Tensor:
        """One epoch over ``order``; the returned sums are the graph's own buffer (read them before the next)."""
        self.order.copy_(order)
        self.graph.replay()
        return self.sums


def optimizer_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor of a torch optimizer's state (created lazily by its first step)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def why_not_graphed(device: torch.device, optimizer: torch.optim.Optimizer | None = None,
                    model: torch.nn.Module | None = None, lr_schedule: str = "constant") -> str | None:
    """Why an epoch cannot be captured here, or None when it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run is on {device.type}"
    if lr_schedule != "constant":
        # The optimizer's kernels take the learning rate as a number: a replay would keep the first epoch's.
        return f"lr_schedule={lr_schedule} changes the learning rate every epoch, and a captured epoch keeps its own"
    if model is not None and any(getattr(m, "track_running_stats", False) and m.momentum is None
                                 for m in model.modules()):
        # A cumulative average of the batch statistics: torch divides by the batch count, read on the host
        # (float(num_batches_tracked)), at every training batch; a capture refuses that synchronisation.
        return "BatchNorm with momentum=null reads its batch count on the host at every batch"
    if optimizer is not None:
        if not isinstance(optimizer, GRAPHABLE_OPTIMIZERS):
            return f"{type(optimizer).__name__} is not one of Adam, AdamW, SGD"
        group, name = optimizer.param_groups[0], type(optimizer).__name__
        if group.get("amsgrad") or group.get("nesterov") or group.get("dampening", 0):
            return f"{name} with amsgrad, nesterov or dampening is not supported"
        if group.get("fused") and not isinstance(optimizer, CAPTURABLE_OPTIMIZERS):
            return f"{name} with fused=True is not supported"
    return None


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Adam and AdamW keep their step count on the device, so that the count goes on at every replay; they
    step with torch's capturable foreach kernels (a config's ``fused: true`` is set aside here: the graphed
    epoch was verified on a GPU with these)."""
    if isinstance(optimizer, CAPTURABLE_OPTIMIZERS):
        for group in optimizer.param_groups:
            group["capturable"] = True
            group["fused"] = False
        for state in optimizer.state.values():  # a resumed run's state: its step moves to the device
            if "step" in state and not state["step"].is_cuda:
                state["step"] = state["step"].to(optimizer.param_groups[0]["params"][0].device, torch.float32)


def graph_wanted(setting: str | bool, device: torch.device, optimizer: torch.optim.Optimizer | None,
                 log: logging.Logger, model: nn.Module | None = None, lr_schedule: str = "constant") -> bool:
    """Whether to capture epochs as CUDA graphs: ``auto`` wherever it can, ``true`` too but it logs why not where
    it cannot (the eager loop trains then), ``false`` never."""
    if setting is False:
        return False
    reason = why_not_graphed(device, optimizer, model, lr_schedule)
    if reason is None:
        return True
    if setting is True or device.type == "cuda":
        log.info("train.cuda_graph=%s: %s; the eager loop trains", str(setting).lower(), reason)
    return False
