"""The stack's trained tensors side by side in one (K, P) buffer, and their gradients in another.

An optimizer step over K members of a 100k-parameter MLP is memory-bound
element-wise work; as eight tensors of each member's Adam state it costs a
hundred small operations a batch, as one buffer about ten (README,
"Benchmarks": stacks of 1 to 24 train 1.1x to 1.3x the model-epochs/s they
did before). So the parameters live in one buffer, row k holding member k's
in the order of its MLP's
``parameters()``, and each stacked parameter (K, ...) is a view into it; the
gradients are views into a second buffer, which autograd accumulates into in
place once they exist (set here, zeroed before each backward pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

# A view into a row-major (K, P) buffer is not dense, so autograd warns (once) that the gradient
# may be slow to accumulate; it accumulates in place all the same (the figures above include it).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class FlatParameters:
    """Tensors of shapes (K, ...) kept as views into ``data`` (K, P); their gradients, into ``grad``."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.shapes = [tuple(t.shape[1:]) for t in tensors]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.data = torch.cat([t.detach().reshape(len(t), -1) for t in tensors], dim=1)
        self.grad = torch.zeros_like(self.data)
        self.tensors = self.views(self.data)
        for tensor, grad in zip(self.tensors, self.views(self.grad)):
            tensor.requires_grad_()
            tensor.grad = grad

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The parameters' parts of any (K, P) tensor laid out as ``data`` (an optimizer's state), as views."""
        parts = flat.split(self.sizes, dim=1)
        return [part.view(len(flat), *shape) for part, shape in zip(parts, self.shapes)]

    def zero_grad(self) -> None:
        self.grad.zero_()

    def keep(self, members: torch.Tensor) -> FlatParameters:
        """The same parameters for these members only (new buffers)."""
        return FlatParameters([t.detach()[members] for t in self.tensors])
