"""Augmentation changes training batches, and only training batches."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from hreg.data import BACKGROUND, Split, Splits
from hreg.loop import train_epoch
from hreg.metrics import evaluate_all
from hreg.regularizer import WeightPenalty
from tests.conftest import compose_config


def augmentation(option: str):
    return instantiate(compose_config(f"augment={option}").augment)


def test_none_means_no_transform():
    assert augmentation("none") is None


@pytest.mark.parametrize("option", ["noise", "affine", "noise_affine"])
def test_each_option_changes_a_batch_and_keeps_its_shape(option):
    torch.manual_seed(0)
    x = torch.full((300, 1, 28, 28), BACKGROUND)
    x[:, :, 10:18, 10:18] = 2.0
    y = augmentation(option)(x)
    assert y.shape == x.shape and not torch.equal(x, y)


def test_noise_strength_follows_sigma():
    x = torch.zeros(300, 1, 28, 28)
    cfg = compose_config("augment=noise", "augment.noise_sigma=0.5")
    assert instantiate(cfg.augment)(x).std().item() == pytest.approx(0.5, rel=0.02)


def test_affine_fills_with_background_not_grey():
    torch.manual_seed(1)
    x = torch.full((4, 1, 28, 28), BACKGROUND)
    y = instantiate(compose_config("augment=affine", "augment.degrees=45").augment)(x)
    assert torch.allclose(y, x)


class Recorder:
    """An augmentation that records what it is applied to."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x + 1.0


def test_augmentation_is_applied_to_training_batches_only():
    torch.manual_seed(0)
    data = Splits(
        train=Split(torch.randn(600, 1, 28, 28), torch.randint(0, 10, (600,))),
        val=Split(torch.randn(200, 1, 28, 28), torch.randint(0, 10, (200,))),
        test=Split(torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))),
        train_index=None,
        val_index=None,
    )
    model = instantiate(compose_config().model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the model stays the same
    before = evaluate_all(model, data)
    recorder = Recorder()
    train_epoch(model, data.train, 300, optimizer, WeightPenalty(), recorder)
    assert [len(b) for b in recorder.seen] == [300, 300]
    train_rows = {tuple(row.flatten()[:8].tolist()) for row in data.train.x}
    assert all(tuple(row.flatten()[:8].tolist()) in train_rows for b in recorder.seen for row in b)
    recorder.seen.clear()
    assert evaluate_all(model, data) == before
    assert recorder.seen == []
