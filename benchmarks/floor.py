"""A run's physical floor: its FLOPs over the device's best GEMM rate (a roofline, not a training run).

The count is the one the project's targets are stated against (``../shared/tools/cpu_floor.py``): the
MLP 784-100-100-100-10, forward and twice-forward backward of every training image in every epoch,
and one forward of train + val + test (70000 images) at every evaluated epoch. The rate is the best
of large square fp32 matmuls with all threads. Shared by ``bench_run.py --compare floor`` and
``bench_epoch.py``; ``sync`` by every benchmark that times GPU work in its own process.
"""

from __future__ import annotations

import time

import torch

from hreg.schedule import is_eval_epoch

#: The course's MLP, layer widths from input to classes.
WIDTHS = (784, 100, 100, 100, 10)
#: Multiply-adds of one image's forward pass.
MACS_PER_IMAGE = sum(a * b for a, b in zip(WIDTHS, WIDTHS[1:]))
TRAIN_IMAGES = 3000
EVALUATED_IMAGES = 70000


def train_epoch_flops(images: int = TRAIN_IMAGES) -> float:
    """FLOPs of one training epoch: forward + backward (twice the forward) of every image."""
    return 2 * 3 * MACS_PER_IMAGE * images


def eval_flops(images: int = EVALUATED_IMAGES) -> float:
    """FLOPs of one evaluation: a forward pass of every image of the three splits."""
    return 2 * MACS_PER_IMAGE * images


def run_flops(epochs: int = 1000, eval_every: int = 10) -> float:
    """FLOPs of a run: every epoch trained, the evaluated epochs (hreg's schedule) evaluated."""
    evaluations = sum(is_eval_epoch(e, epochs, eval_every) for e in range(1, epochs + 1))
    return epochs * train_epoch_flops() + evaluations * eval_flops()


def peak_rate(device: torch.device | str = "cpu", size: int = 2048, reps: int = 10, tries: int = 3) -> float:
    """The device's best fp32 GEMM rate (FLOP/s) over ``tries`` timings of ``reps`` square matmuls."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = 0.0
    for _ in range(tries):
        for _ in range(3):
            a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


def sync(device: torch.device | str) -> None:
    """Wait for the GPU's queued work, so that a timer reads what it took (nothing to wait for elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
