"""The `data` config group: MNIST split into train / validation / test tensors.

The course trains on a small stratified fraction of MNIST's 60000 training
images (5%: 3000) so that regularization matters; the remaining 95% is the
validation set used to choose hyperparameters, and the 10000 test images are
only reported. The splits are normalised once and kept on the device as whole
tensors: an epoch is a permutation of indices and batches are slices, which is
what makes a 1000-epoch run take seconds rather than minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from hreg import mnist
from hreg.mnist import MNIST_MEAN, MNIST_STD

#: Images in MNIST's training set, from which the training and validation splits are drawn.
MNIST_TRAIN_SIZE = 60000
#: A black pixel after normalisation: the fill value of geometric augmentation.
BACKGROUND = -MNIST_MEAN / MNIST_STD


@dataclass
class Split:
    """Images (N, 1, 28, 28), normalised, and labels (N,), on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    train_index: np.ndarray  # positions in MNIST's training set, for audit
    val_index: np.ndarray


def train_size(fraction: float) -> int:
    """How many training images ``data.train_fraction`` gives (the rest of MNIST's training set validates)."""
    return round(fraction * MNIST_TRAIN_SIZE)


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick round(fraction * N) indices with each class in proportion.

    Per-class quotas are floored, then the remaining places go to the classes
    with the largest remainders, so the total is exact. Returns (chosen, rest),
    both sorted.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    total = round(fraction * len(labels))
    exact = fraction * counts
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: total - quota.sum()]:
        quota[i] += 1
    chosen = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    )
    chosen.sort()
    rest = np.setdiff1d(np.arange(len(labels)), chosen, assume_unique=True)
    return chosen, rest


def build_data(cfg: DictConfig, device: torch.device) -> Splits:
    """The three splits on ``device``, the training one drawn with ``cfg.seed``."""
    mnist_tensors = mnist.load_normalised()
    x, y = mnist_tensors["train_x"], mnist_tensors["train_y"]
    chosen, rest = stratified_indices(y.numpy(), cfg.train_fraction, cfg.seed)

    def split(index: np.ndarray) -> Split:
        rows = torch.from_numpy(index)
        return Split(x.index_select(0, rows), y.index_select(0, rows)).to(device)

    return Splits(
        train=split(chosen),
        val=split(rest),
        test=Split(mnist_tensors["test_x"], mnist_tensors["test_y"]).to(device),
        train_index=chosen,
        val_index=rest,
    )
