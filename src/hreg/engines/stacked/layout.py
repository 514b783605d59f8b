"""The data of a stack's members as stacked tensors: what its trainer gathers batches from and its
evaluator sums over, laid out once when the stack is built."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from hreg.data import Split, Splits
from hreg.metrics import PROBE_SIZE


class Layout:
    """The distinct splits of the members (one per ``data.seed``) and which member uses which.

    Training images of every split sit side by side, one row each (``train_x``): a member's batch is
    the rows ``split * train_size + its indices``. MNIST's training images sit once more in their own
    order (``images``: every split partitions them), with each split's train and val masks
    (``masks``): an evaluation pass covers every member's train and val splits at once.
    """

    def __init__(self, data: Sequence[Splits], device: torch.device) -> None:
        self.device = device
        self.splits: list[Splits] = []
        for splits in data:
            if not any(splits is s for s in self.splits):
                self.splits.append(splits)
        self.split_of = torch.tensor([next(i for i, s in enumerate(self.splits) if d is s) for d in data],
                                     device=device)
        self.train_x = torch.cat([s.train.x.flatten(1) for s in self.splits])
        self.train_y = torch.cat([s.train.y for s in self.splits])
        self.train_size = len(self.splits[0].train)
        self.image_shape = tuple(self.splits[0].train.x.shape[1:])
        first = self.splits[0]
        index = torch.from_numpy(np.concatenate([first.train_index, first.val_index])).to(device)
        x, y = torch.cat([first.train.x, first.val.x]), torch.cat([first.train.y, first.val.y])
        self.images = Split(torch.empty_like(x).index_copy_(0, index, x), torch.empty_like(y).index_copy_(0, index, y))
        self.masks = [torch.zeros(len(self.splits), len(self.images), device=device) for _ in range(2)]
        for i, split in enumerate(self.splits):
            for masks, index in zip(self.masks, (split.train_index, split.val_index)):
                masks[i, torch.from_numpy(index).to(device)] = 1
        # Each split's probe set (``metrics.probe_set``: its first validation images) as rows of ``images``.
        self.probe_rows = (torch.stack([torch.from_numpy(s.val_index[:PROBE_SIZE]) for s in self.splits]).to(device)
                           if len(first.val) else None)

    def __len__(self) -> int:
        """The members the stack holds now."""
        return len(self.split_of)

    @property
    def test(self) -> Split:
        """The test set (every split shares it)."""
        return self.splits[0].test

    def rows(self, order: torch.Tensor) -> torch.Tensor:
        """Each member's training images, ``order`` (K, n) indices into its own split, as rows of ``train_x``."""
        return order + self.train_size * self.split_of.unsqueeze(1)

    def by_split(self) -> Iterator[tuple[Splits, torch.Tensor]]:
        """Each distinct split with the positions of the members that use it."""
        for i, splits in enumerate(self.splits):
            members = (self.split_of == i).nonzero().flatten()
            if len(members):
                yield splits, members

    def keep(self, index: torch.Tensor) -> None:
        """Go on with the members at these positions only."""
        self.split_of = self.split_of[index]
