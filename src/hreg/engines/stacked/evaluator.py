"""What a stack's members are measured by, all at once: loss and accuracy on their splits, and the
snapshot measurements (input gradients, prediction entropies) that a native run takes of one model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hreg.data import Split
from hreg.engines.stacked.layout import Layout
from hreg.engines.stacked.model import StackedMLP
from hreg.metrics import PROBE_SIZE, SPLITS, Probe, eval_chunk, log_probs_entropy, logits_entropy, probe_set

#: Images per evaluation pass of a stack (``metrics.EVAL_CHUNK`` is one model's). On a CPU, small
#: enough that every member's activations stay in the caches; on a GPU, large enough that a pass is a
#: few big kernels.
STACK_EVAL_CHUNK = {"cpu": 2048, "cuda": 32768}


class Evaluator:
    """Measures every member of a stack; ``forget`` after each epoch's training (the measurements of an
    epoch are taken once and shared: a snapshot's entropies come from that epoch's evaluation)."""

    def __init__(self, model: StackedMLP, layout: Layout, batch_size: int, layers: Sequence[str]) -> None:
        self.model, self.layout = model, layout
        self.device = layout.device
        self.batch_size = batch_size
        self.layers = list(layers)  # the names of a member's Linear layers, for its input gradients
        self.chunk = eval_chunk(self.device, STACK_EVAL_CHUNK)
        self.probes: list[Probe] | None = None  # this epoch's snapshot measurements, by position
        self.entropy: torch.Tensor | None = None  # this epoch's evaluation's entropies (K, images), if any

    def forget(self) -> None:
        """The weights changed: measure again when asked."""
        self.probes = self.entropy = None

    def _per_image(self, split: Split) -> torch.Tensor:
        """(3, K, N): every member's cross-entropy, hit (1 or 0) and prediction entropy on each image of
        ``split``, in eval mode (cross-entropy as ``F.cross_entropy`` computes it: NLL of log-softmax)."""
        predict = self.model.predictor(None)
        out = torch.empty(3, len(self.layout), len(split), device=self.device)
        for start in range(0, len(split), self.chunk):
            rows = slice(start, start + self.chunk)
            logits, target = predict(split.x[rows].flatten(1)), split.y[rows].expand(len(self.layout), -1)
            log_p = torch.log_softmax(logits.transpose(1, 2), dim=1)  # (K, classes, n): much faster than over dim -1
            out[0, :, rows] = F.nll_loss(log_p, target, reduction="none")
            out[1, :, rows] = logits.argmax(dim=-1) == target
            out[2, :, rows] = log_probs_entropy(log_p, dim=1)
        return out

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Loss and accuracy of every member on its train and val splits and on the test set.

        Every member sees all of MNIST's training images in one pass (its train and val splits are a
        partition of them) and the test set in another: two passes whatever the number of splits, each
        as wide as the stack. A member's means over its own splits are sums under its masks."""
        layout = self.layout
        table = torch.empty(len(self.layout), len(SPLITS), 2, device=self.device)
        per_image = self._per_image(layout.images)
        for j, masks in enumerate(layout.masks):
            mask = masks[layout.split_of]  # (K, images): 1 on the member's images of this split
            table[:, j] = (per_image[:2] * mask).sum(dim=2).T / mask.sum(dim=1, keepdim=True)  # 0 / 0: nan, as for an empty split
        table[:, 2] = self._per_image(layout.test)[:2].mean(dim=2).T
        self.entropy = per_image[2]  # a snapshot at this epoch takes its entropies from here
        return [
            {f"{name}_{kind}": value for name, pair in zip(SPLITS, member) for kind, value in zip(("loss", "acc"), pair)}
            for member in table.tolist()
        ]

    def probe(self, position: int) -> Probe:
        """The snapshot measurements of the member at ``position`` (``RunContext.probe``), taken for every
        member at once."""
        if self.probes is None:
            self.probes = self._probe_all()
        return self.probes[position]

    def _probe_all(self) -> list[Probe]:
        """Every member's input gradients and entropy, as ``metrics.probe`` measures one model's.

        The gradients come from one forward and backward pass of the stack in train mode on each
        member's first training batch (unaugmented); BatchNorm statistics and the random state are
        restored, and no parameter gradient is touched. Entropies come from this epoch's evaluation
        (snapshots are taken at evaluation epochs), else from an evaluation pass of their own.
        """
        layout = self.layout
        k, size = len(self.layout), min(self.batch_size, layout.train_size)
        rows = layout.rows(torch.arange(size, device=self.device).expand(k, -1)).reshape(-1)
        x = layout.train_x.index_select(0, rows).view(k, size, -1).requires_grad_()
        y = layout.train_y.index_select(0, rows).view(k, size)
        saved = [b.clone() for b in self.model.buffers()]
        inputs: list[torch.Tensor] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            logits = self.model.forward(x, training=True, inputs=inputs)
            loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1).sum()
            grads = torch.autograd.grad(loss, inputs)
        with torch.no_grad():
            for buffer, value in zip(self.model.buffers(), saved):
                buffer.copy_(value)
        if self.entropy is not None and layout.probe_rows is not None:  # evaluated this epoch: no pass of its own
            entropy = self.entropy.gather(1, layout.probe_rows[layout.split_of])
        else:
            entropy = torch.empty(k, min(PROBE_SIZE, len(probe_set(layout.splits[0]))), device=self.device)
            with torch.no_grad():
                for splits, members in layout.by_split():
                    entropy[members] = logits_entropy(self._logits(probe_set(splits).x, members))
        return [Probe({name: g[m].detach() for name, g in zip(self.layers, grads)}, entropy[m]) for m in range(k)]

    def _logits(self, x: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits (M, N, classes) of the members (positions, ascending) on the images x (N, ...)."""
        predict = self.model.predictor(None if len(members) == len(self.layout) else members)
        return torch.cat([predict(xs) for xs in x.flatten(1).split(self.chunk)], dim=1)

    def keep(self, positions: list[int], index: torch.Tensor) -> None:
        """Go on with the members at these positions only (``index``: the same, on the device)."""
        if self.entropy is not None:
            self.entropy = self.entropy[index]
        if self.probes is not None:
            self.probes = [self.probes[p] for p in positions]
