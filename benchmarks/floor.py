"""A run's physical floor: its FLOPs over the device's best GEMM rate (a roofline, not a training run).

The count is the one the project's targets are stated against (``../shared/tools/cpu_floor.py``): the
MLP 784-100-100-100-10, forward and twice-forward backward of every training image in every epoch,
and one forward of train + val + test (70000 images) at every evaluated epoch. The rate is the best
of large square fp32 matmuls with all threads. Shared by ``bench_run.py --compare floor`` and
``bench_epoch.py``; ``sync`` by every benchmark that times GPU work in its own process.

``gemm_seconds`` is a second, stricter floor: the run's own matrix products at the shapes the run
gives them (batches of 300, 100-wide layers, evaluation chunks), replayed with nothing between them.
What a run takes beyond it is the work around the products (optimizer, activations, gathers,
dispatch); what it takes below the first floor and above this one is the products' shapes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from hreg.schedule import is_eval_epoch

#: The course's MLP, layer widths from input to classes.
WIDTHS = (784, 100, 100, 100, 10)
#: Multiply-adds of one image's forward pass.
MACS_PER_IMAGE = sum(a * b for a, b in zip(WIDTHS, WIDTHS[1:]))
#: The evaluated splits' sizes (train, val, test): each is evaluated in chunks of its own.
SPLITS = (3000, 57000, 10000)
TRAIN_IMAGES = SPLITS[0]
EVALUATED_IMAGES = sum(SPLITS)
BATCH = 300


def train_epoch_flops(images: int = TRAIN_IMAGES) -> float:
    """FLOPs of one training epoch: forward + backward (twice the forward) of every image."""
    return 2 * 3 * MACS_PER_IMAGE * images


def eval_flops(images: int = EVALUATED_IMAGES) -> float:
    """FLOPs of one evaluation: a forward pass of every image of the three splits."""
    return 2 * MACS_PER_IMAGE * images


def evaluations(epochs: int = 1000, eval_every: int = 10) -> int:
    """How many epochs of a run are evaluated (hreg's schedule: the first, the last and every ``eval_every``)."""
    return sum(is_eval_epoch(e, epochs, eval_every) for e in range(1, epochs + 1))


def run_flops(epochs: int = 1000, eval_every: int = 10) -> float:
    """FLOPs of a run: every epoch trained, the evaluated epochs evaluated."""
    return epochs * train_epoch_flops() + evaluations(epochs, eval_every) * eval_flops()


def peak_rate(device: torch.device | str = "cpu", size: int = 2048, reps: int = 10, tries: int = 3) -> float:
    """The device's best fp32 GEMM rate (FLOP/s) over ``tries`` timings of ``reps`` square matmuls."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return 2 * size**3 / best_seconds(lambda: a @ b, device, tries, reps)


def gemm_seconds(device: torch.device | str, chunk: int, tries: int = 5) -> tuple[float, float]:
    """Seconds of one training epoch's and one evaluation's matrix products alone (best of ``tries``)."""
    epoch, evaluation = gemm_work(device)
    return best_seconds(epoch, device, tries, reps=10), best_seconds(lambda: evaluation(chunk), device, tries, reps=1)


def gemm_work(device: torch.device | str) -> tuple[Callable[[], None], Callable[[int], None]]:
    """One training epoch's and one evaluation's (in chunks of a given size) matrix products, replayed alone
    at the run's shapes, on one set of operands.

    The products are the ones torch runs for the native loop: per batch, each layer's forward
    ``addmm(bias, x, W.t())``, and in backward its weight gradient ``g.t() @ x`` and (but for the
    first layer, whose input needs none) its input gradient ``g @ W``; per evaluation, each layer's
    forward over every split in chunks of the given number of rows. Operands are random: a product's time does
    not depend on its values (denormals aside, which the run flushes).
    """
    weights = [torch.randn(out, into, device=device) * 0.05 for into, out in zip(WIDTHS, WIDTHS[1:])]
    biases = [torch.zeros(out, device=device) for out in WIDTHS[1:]]
    acts = [torch.randn(BATCH, width, device=device) for width in WIDTHS]
    images = [torch.randn(rows, WIDTHS[0], device=device) for rows in SPLITS]

    def epoch() -> None:
        for _ in range(TRAIN_IMAGES // BATCH):
            for layer, (w, b) in enumerate(zip(weights, biases)):
                torch.addmm(b, acts[layer], w.t())
            for layer, w in enumerate(weights):
                grad = acts[layer + 1]
                grad.t().mm(acts[layer])
                if layer:
                    grad.mm(w)

    def evaluation(chunk: int) -> None:
        for split in images:
            for rows in split.split(chunk):
                for w, b in zip(weights, biases):
                    rows = torch.addmm(b, rows, w.t())

    return epoch, evaluation


def best_seconds(work: Callable[[], object], device: torch.device | str, tries: int, reps: int) -> float:
    """The shortest time of ``work`` (seconds a call) over ``tries`` timings of ``reps`` calls, after warm-ups."""
    best = math.inf
    for _ in range(tries):
        for _ in range(3):
            work()
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            work()
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def run_gemm_seconds(device: torch.device | str, chunk: int, epochs: int = 1000, eval_every: int = 10) -> float:
    """Seconds of a run's matrix products alone at its shapes: every epoch's and every evaluation's."""
    epoch, evaluation = gemm_seconds(device, chunk)
    return epochs * epoch + evaluations(epochs, eval_every) * evaluation


def sync(device: torch.device | str) -> None:
    """Wait for the GPU's queued work, so that a timer reads what it took (nothing to wait for elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
