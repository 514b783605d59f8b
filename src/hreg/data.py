"""The `data` config group: MNIST split into train / validation / test tensors.

The course trains on a small stratified fraction of MNIST's 60000 training
images (5%: 3000) so that regularization matters; the remaining 95% is the
validation set used to choose hyperparameters, and the 10000 test images are
only reported. The splits are normalised once and kept on the device as whole
tensors: an epoch is a permutation of indices and batches are slices, which is
what makes a 1000-epoch run take seconds rather than minutes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from hreg import mnist

#: Images in MNIST's training set, from which the training and validation splits are drawn.
MNIST_TRAIN_SIZE = 60000
#: Mean and standard deviation of MNIST's 60000 training images (pixel / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
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


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.tensor(images, dtype=torch.float32).div_(255).sub_(MNIST_MEAN).div_(MNIST_STD)
    return Split(x.unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64)))


@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST through datamaestro, after checking the files' MD5s (never trains on bad data).

    Read once per process: the jobs of a multirun and the runs of a stack share it.
    """
    mnist.verify()
    from datamaestro import prepare_dataset

    dataset = prepare_dataset(mnist.DATASET_ID)
    return (
        dataset.train.images.data(),
        dataset.train.labels.data(),
        dataset.test.images.data(),
        dataset.test.labels.data(),
    )


def build_data(cfg: DictConfig, device: torch.device) -> Splits:
    """The three splits on ``device``, the training one drawn with ``cfg.seed``."""
    train_images, train_labels, test_images, test_labels = load_mnist()
    chosen, rest = stratified_indices(train_labels, cfg.train_fraction, cfg.seed)
    return Splits(
        train=_to_split(train_images[chosen], train_labels[chosen]).to(device),
        val=_to_split(train_images[rest], train_labels[rest]).to(device),
        test=_to_split(test_images, test_labels).to(device),
        train_index=chosen,
        val_index=rest,
    )
