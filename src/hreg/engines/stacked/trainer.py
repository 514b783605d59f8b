"""An epoch of every member of a stack at once: batches gathered from the stack's layout, one forward and
backward pass of the stacked model, the weight penalties with their gradients written out, and on a GPU
the whole epoch as one CUDA graph."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hreg.augment import AugmentSettings, BatchAugment
from hreg.engines.graph import EpochGraph, graph_wanted
from hreg.engines.stacked.layout import Layout
from hreg.engines.stacked.model import StackedMLP, span
from hreg.engines.stacked.optim import StackedOptimizer
from hreg.hooks import EpochStats, RunContext
from hreg.schedule import batch_bounds

log = logging.getLogger("hreg")


def penalty_kind(ctx: RunContext) -> str:
    """A run's weight penalty: "l1", "l2" or "none"."""
    return ctx.penalty.kind if ctx.penalty.active else "none"


class Trainer:
    """Trains every member of a stack an epoch at a time, each in its own random order of its own split.

    Its random draws (batch order, dropout masks, augmentation) come from torch's current generator:
    a member's draws are its own rows of each draw.
    """

    def __init__(self, ctxs: Sequence[RunContext], model: StackedMLP, layout: Layout) -> None:
        self.model, self.layout = model, layout
        self.device = layout.device
        self.batch_size = ctxs[0].cfg.data.batch_size
        self.optimizer = StackedOptimizer([c.cfg.optimizer for c in ctxs], model.parameters())
        settings = [AugmentSettings(**{k: v for k, v in c.cfg.augment.items() if not k.startswith("_")}) for c in ctxs]
        self.augment = BatchAugment(settings) if any(s.active for s in settings) else None
        self.lam = {kind: [c.penalty.lam if penalty_kind(c) == kind else 0.0 for c in ctxs] for kind in ("l1", "l2")}
        self._penalties()
        cfg = ctxs[0].cfg
        self.graphed = graph_wanted(cfg.train.cuda_graph, self.device, None, log, lr_schedule=cfg.lr_schedule)
        self.graph: EpochGraph | None = None  # captured at the first epoch, again after members leave

    def _penalties(self) -> None:
        """Each penalty's rows (``span``) and their lams (K_kind, 1, 1), decided here, not per batch."""
        self.penalised = {}
        for kind, lams in self.lam.items():
            rows = span([lam > 0 for lam in lams])
            if rows.stop > rows.start:
                self.penalised[kind] = (rows, torch.tensor(lams[rows], dtype=torch.float32, device=self.device).view(-1, 1, 1))

    @torch.no_grad()
    def penalty(self) -> torch.Tensor:
        """Each member's weight penalty (K,), lam * sum |w| or lam * sum w^2 over its Linear weights, with
        its gradient (lam * sgn(w), 2 * lam * w, as autograd gives it) added to the weights' gradients:
        written out, a few passes over the penalised members' weights instead of autograd's dozen."""
        total = torch.zeros(len(self.layout), device=self.device)
        for kind, (rows, lam) in self.penalised.items():
            for w in self.model.linear_weights():
                w, grad = w[rows], w.grad[rows]
                if kind == "l1":
                    total[rows] += lam.view(-1) * torch.linalg.vector_norm(w, 1, dim=(1, 2))
                    grad.addcmul_(w.sign(), lam)
                else:
                    total[rows] += lam.view(-1) * torch.linalg.vector_norm(w, 2, dim=(1, 2)).square()
                    grad.addcmul_(w, 2 * lam)
        return total

    def batch_order(self) -> torch.Tensor:
        """A random permutation of the training images for each member (K, n), in one draw."""
        return torch.rand(len(self.layout), self.layout.train_size, device=self.device).argsort(dim=1)

    def train_epoch(self) -> list[EpochStats]:
        """One pass of every member over its training split, in its own random order (eager, or a graph's replay)."""
        rows = self.layout.rows(self.batch_order())
        batches = len(batch_bounds(self.layout.train_size, self.batch_size))
        if not self.graphed:
            return EpochStats.from_sums(self.train_batches(rows), batches)
        if self.graph is None:
            self.graph = EpochGraph(self.train_batches, rows, self._state)
        return EpochStats.from_sums(self.graph(rows), batches)

    def _state(self) -> list[torch.Tensor]:
        """Everything an epoch changes: weights, BatchNorm statistics, optimizer state."""
        optimizer = self.optimizer
        state = [t for slot in optimizer.state for t in slot]
        return [*self.model.parameters(), *self.model.buffers(), optimizer.steps, *state]

    def train_batches(self, rows: torch.Tensor) -> torch.Tensor:
        """The epoch's batches; ``rows`` (K, n) are the members' images in order. Returns sums (2, K) on the device."""
        layout = self.layout
        k, n = len(self.layout), layout.train_size
        sums = torch.zeros(2, k, device=self.device)
        # The batches' images, gathered into one buffer for the epoch: on a CPU a fresh tensor for each
        # batch makes the gather several times slower.
        images = torch.empty(k * min(self.batch_size, n), layout.train_x.shape[1], device=self.device)
        for start, stop in batch_bounds(n, self.batch_size):
            index = rows[:, start:stop].reshape(-1)
            x = torch.index_select(layout.train_x, 0, index, out=images[: len(index)]).view(k, stop - start, -1)
            y = layout.train_y.index_select(0, index).view(k, stop - start)
            if self.augment is not None:
                x = self.augment(x.view(k, stop - start, *layout.image_shape)).flatten(2)
            logits = self.model.forward(x, training=True)
            data_loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)
            self.optimizer.zero_grad()
            data_loss.sum().backward()
            penalty = self.penalty()
            self.optimizer.step()
            sums += torch.stack([data_loss.detach(), penalty.detach()])
        return sums

    def keep(self, positions: list[int], index: torch.Tensor) -> None:
        """Go on with the members at these positions only (``index``: the same, on the device); the model
        has kept them already."""
        self.optimizer.keep(index, self.model.parameters())
        if self.augment is not None:
            self.augment = self.augment.keep(positions)
        self.lam = {kind: [lams[p] for p in positions] for kind, lams in self.lam.items()}
        self._penalties()
        self.graph = None  # it holds the old tensors: captured again at the next epoch
