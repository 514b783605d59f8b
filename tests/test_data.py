"""The MNIST store and the train / validation / test split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hreg import mnist
from hreg.data import build_data, stratified_indices
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def splits():
    return build_data(compose_config().data, torch.device("cpu"))


def test_split_sizes_are_3000_57000_10000(splits):
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3000, 57000, 10000)
    assert splits.train.x.shape == (3000, 1, 28, 28)


def test_train_and_validation_are_disjoint_and_cover_mnist_train(splits):
    train, val = set(splits.train_index.tolist()), set(splits.val_index.tolist())
    assert not train & val
    assert train | val == set(range(60000))


def test_training_split_is_stratified_by_class(splits):
    labels = mnist.load_normalised()["train_y"].numpy()
    train_counts = np.bincount(splits.train.y.numpy(), minlength=10)
    expected = np.bincount(labels, minlength=10) * 0.05
    assert np.all(np.abs(train_counts - expected) < 1)


def test_images_are_normalised(splits):
    assert abs(splits.train.x.mean().item()) < 0.05
    assert abs(splits.train.x.std().item() - 1) < 0.05


def test_split_depends_on_seed_and_only_on_it():
    labels = np.repeat(np.arange(10), 100)
    a, _ = stratified_indices(labels, 0.1, seed=1)
    b, _ = stratified_indices(labels, 0.1, seed=1)
    c, _ = stratified_indices(labels, 0.1, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) == 100 and np.all(np.bincount(labels[a]) == 10)


def test_uneven_fraction_still_gives_exact_total():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3)
    chosen, rest = stratified_indices(labels, 0.5, seed=0)
    assert len(chosen) == round(0.5 * 15)
    assert sorted(np.concatenate([chosen, rest]).tolist()) == list(range(15)), "a partition: disjoint, complete"


def test_the_store_is_where_datamaestro_keeps_it():
    from datamaestro.definitions import AbstractDataset

    assert mnist.store_dir() == Path(AbstractDataset.find(mnist.DATASET_ID).datapath)


def test_the_normalised_cache_holds_what_datamaestro_reads():
    tensors = mnist.load_normalised()
    arrays = mnist.read_through_datamaestro()
    assert (mnist.store_dir() / mnist.CACHE_FILE).is_file()
    assert torch.equal(tensors["train_y"], torch.tensor(arrays["train_labels"], dtype=torch.int64))
    pixels = tensors["test_x"][:, 0] * mnist.MNIST_STD + mnist.MNIST_MEAN
    assert torch.allclose(pixels * 255, torch.tensor(arrays["test_images"], dtype=torch.float32), atol=1e-3)
    assert tensors["train_x"].shape == (60000, 1, 28, 28) and tensors["test_x"].dtype == torch.float32


def test_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    store = tmp_path / "data" / "image" / "com" / "lecun" / "mnist"
    shutil.copytree(mnist.store_dir(), store, ignore=shutil.ignore_patterns(mnist.CACHE_FILE))
    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path))
    mnist.load_normalised.cache_clear()
    try:
        built = mnist.load_normalised()["train_y"].clone()
        (store / mnist.CACHE_FILE).write_bytes(b"not a cache")
        mnist.load_normalised.cache_clear()
        assert torch.equal(mnist.load_normalised()["train_y"], built)
        assert (store / mnist.CACHE_FILE).stat().st_size > 200_000_000, "written again"
    finally:
        mnist.load_normalised.cache_clear()


@pytest.fixture
def store_copy(tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(mnist.store_dir(), target)
    return target


def test_store_copy_verifies(store_copy):
    mnist.verify(store_copy)


def test_corrupted_file_is_detected_with_a_fix(store_copy):
    path = store_copy / "train_labels.idx"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.DataError, match="MD5 mismatch.*hreg-mnist"):
        mnist.verify(store_copy)


def test_missing_file_is_detected_with_a_fix(store_copy):
    (store_copy / "test_images.idx").unlink()
    with pytest.raises(mnist.DataError, match="missing.*hreg-mnist"):
        mnist.verify(store_copy)


def test_idx_rebuild_round_trips_pixels_and_labels():
    images = np.arange(2 * 784, dtype=np.float32).reshape(2, 784) % 256 / 256
    labels = np.array([3, 7])
    idx = mnist._idx_images(images)
    assert idx[:4] == b"\x00\x00\x08\x03"
    pixels = np.frombuffer(idx[16:], dtype=np.uint8).reshape(2, 784)
    assert np.array_equal(pixels / 256, images)
    assert mnist._idx_labels(labels)[8:] == bytes([3, 7])
