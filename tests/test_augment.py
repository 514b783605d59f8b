"""Augmentation changes training batches, and only training batches."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from hreg.data import BACKGROUND, Split, Splits
from hreg.engines.native import train_epoch
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


def digit_batch(n: int = 64) -> torch.Tensor:
    """n copies of one real MNIST validation image (normalised)."""
    from hreg import mnist

    image = mnist.load_normalised()["test_x"][0]
    return image.expand(n, *image.shape).clone()


@pytest.mark.parametrize("option", ["affine", "elastic", "elastic_affine"])
def test_every_image_of_a_batch_gets_its_own_transform(option):
    torch.manual_seed(0)
    out = augmentation(option)(digit_batch())
    distinct = {tuple(img.flatten().round(decimals=4).tolist()) for img in out}
    assert len(distinct) == len(out), "no two images share a draw"
    shared = instantiate(compose_config(f"augment={option}", "augment.per_image=false").augment)(digit_batch())
    assert all(torch.equal(img, shared[0]) for img in shared), "per_image=false: one draw for the whole batch"
    assert not torch.equal(shared[0], digit_batch(1)[0])


def test_zero_strengths_are_the_identity():
    from hreg.augment import AugmentSettings, BatchAugment

    x = torch.stack([digit_batch(8), digit_batch(8)])  # a stack of two members
    out = BatchAugment([AugmentSettings(), AugmentSettings(degrees=30.0, elastic_alpha=34.0)])(x)
    assert torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1]), "each member its own strengths"
    nearly = BatchAugment([AugmentSettings(degrees=1e-9)])(digit_batch(8))  # the grid path, nothing moved
    assert torch.allclose(nearly, digit_batch(8), atol=1e-4)
    assert AugmentSettings(degrees=0.0, elastic_alpha=0.0, noise_sigma=0.0).active is False


def test_elastic_distortion_keeps_the_label(tmp_path):
    from hreg.build import build_context
    from hreg.metrics import evaluate

    ctx = build_context(compose_config("monitor=none"), tmp_path)
    torch.manual_seed(0)
    for _ in range(15):
        train_epoch(ctx.model, ctx.data.train, 300, ctx.optimizer, ctx.penalty)
    images = Split(ctx.data.val.x[:5000], ctx.data.val.y[:5000])
    _, clean = evaluate(ctx.model, images)
    distorted = Split(augmentation("elastic")(images.x), images.y)
    _, elastic = evaluate(ctx.model, distorted)
    assert not torch.allclose(distorted.x, images.x, atol=0.1)
    assert clean > 0.88 and elastic > 0.5 * clean, (clean, elastic)  # far above chance (0.1): still the same digits


def blur_covariance(sigma: float, size: int = 28) -> torch.Tensor:
    """M M^T: a uniform [-1, 1] field F blurred at full resolution, M F M^T, has the covariance
    Cov(f[i, j], f[i', j']) = (1/3) (M M^T)[i, i'] (M M^T)[j, j']."""
    from hreg.augment import _smoothing_matrices

    m = _smoothing_matrices(torch.tensor([sigma], dtype=torch.float64), size)[0]
    return m @ m.T


@pytest.mark.parametrize("sigma", [3.0, 4.0, 6.0])
def test_the_elastic_basis_keeps_the_covariance_of_the_full_blur(sigma):
    from hreg.augment import _elastic_basis

    basis = _elastic_basis(torch.tensor([sigma], dtype=torch.float64), 28)[0]
    assert basis.shape[1] <= 10, "a tenth of the draws or fewer for the search's sigmas (3 to 6)"
    full = blur_covariance(sigma)
    assert torch.allclose(basis @ basis.T, full, atol=2e-4 * full.max().item())


def test_elastic_fields_have_each_members_spread_and_smoothness():
    """Drawn fields against the full-resolution blur's covariance, member by member and axis by axis."""
    from hreg.augment import AugmentSettings, BatchAugment

    members = [AugmentSettings(elastic_alpha=34.0, elastic_sigma=3.0), AugmentSettings(elastic_alpha=10.0, elastic_sigma=6.0)]
    augment = BatchAugment(members)
    augment._tensors(torch.device("cpu"), 28, 28)
    torch.manual_seed(0)
    fields = torch.cat([augment._elastic_field(2, 2000, torch.device("cpu")) for _ in range(4)], dim=1)
    for m, settings in enumerate(members):
        c = blur_covariance(settings.elastic_sigma)
        expected = (settings.elastic_alpha * 2 / 28) ** 2 / 3 * c[14, 14] * c  # of the middle row, in grid units
        for axis in (0, 1):
            empirical = fields[m, :, axis, 14].double().T.cov()  # over 8000 draws, 28 x 28
            assert torch.allclose(empirical, expected, atol=0.05 * expected.max().item()), (m, axis)
        assert fields[m].mean().abs() < 0.02 * expected.max().sqrt()
