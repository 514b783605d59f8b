"""Benchmark: the parts of a default run's epoch against the device's GEMM floor, in one process.

Times, interleaved over ROUNDS rounds (medians): the evaluation pass over train + val + test
(70000 images) at several chunk sizes, the choice behind ``metrics.EVAL_CHUNK``; the batches'
gather by ``x[index]`` and by ``index_select`` (the native loop's); and the native loop's training
epochs, ten in a row as a run trains them between two evaluations (per epoch). Each is printed with its
floor (its FLOPs at the device's best GEMM rate, ``floor.py``) and with its own matrix products timed
alone at its shapes (``floor.gemm_work``), so that the chunk table and the loop can be chosen by
measurement and what a part spends beyond its products is in view.

    .venv/bin/python benchmarks/bench_epoch.py [--device cpu] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch

from floor import BATCH, EVALUATED_IMAGES, TRAIN_IMAGES, eval_flops, gemm_work, peak_rate, sync, train_epoch_flops
from hreg.data import Split
from hreg.engines.native import train_epoch
from hreg.metrics import eval_chunk, predict
from hreg.model import MLP
from hreg.regularizer import WeightPenalty

CHUNKS = (512, 1024, 2048, 4096, 8192, 20000, EVALUATED_IMAGES)
EPOCHS = 10
EPOCH = f"training epoch (native loop, {EPOCHS} in a row)"
PRODUCTS = "products alone: "


def timed(work: Callable[[], object], device: torch.device) -> float:
    """Seconds ``work`` takes (the device synchronised)."""
    start = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MLP().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    images = torch.randn(EVALUATED_IMAGES, 1, 28, 28, device=device)
    train = Split(images[:TRAIN_IMAGES].clone(), torch.randint(0, 10, (TRAIN_IMAGES,), device=device))
    index = torch.randperm(TRAIN_IMAGES, device=device)[:BATCH]
    batches = TRAIN_IMAGES // BATCH
    parts: dict[str, Callable[[], object]] = {f"evaluation, chunks of {c}": (lambda c=c: predict(model, images, c))
                                              for c in CHUNKS}
    parts[f"{batches} batches gathered by x[index]"] = lambda: [train.x[index] for _ in range(batches)]
    parts[f"{batches} batches gathered by index_select"] = lambda: [train.x.index_select(0, index)
                                                                   for _ in range(batches)]
    parts[EPOCH] = lambda: [train_epoch(model, train, BATCH, optimizer, WeightPenalty()) for _ in range(EPOCHS)]
    floors = {name: eval_flops() for name in parts if name.startswith("evaluation")}
    floors[EPOCH] = train_epoch_flops()
    # Each part's matrix products alone, timed in the same rounds (``floor.gemm_work``).
    epoch, evaluation = gemm_work(device)
    alone = {f"evaluation, chunks of {c}": functools.partial(evaluation, c) for c in CHUNKS}
    alone[EPOCH] = lambda: [epoch() for _ in range(EPOCHS)]
    parts |= {PRODUCTS + name: work for name, work in alone.items()}
    samples: dict[str, list[float]] = {name: [] for name in parts}
    for work in parts.values():  # warm-up
        work()
    for _ in range(args.rounds):
        for name, work in parts.items():
            samples[name].append(timed(work, device) / (EPOCHS if name.endswith(EPOCH) else 1))
    peak = peak_rate(device)
    print(f"{device.type}, {torch.get_num_threads()} threads, best GEMM {peak / 1e9:.0f} GFLOP/s; "
          f"medians of {args.rounds} interleaved rounds; the loop evaluates in chunks of {eval_chunk(device)}")
    print("| part | median (ms) | floor (ms) | x floor | its products alone (ms) | x products |")
    print("|---|---|---|---|---|---|")
    ms = {name: statistics.median(times) * 1e3 for name, times in samples.items()}
    for name in parts:
        if name.startswith(PRODUCTS):
            continue
        floor = floors.get(name)
        extra = f"{floor / peak * 1e3:.1f} | {ms[name] / (floor / peak * 1e3):.2f}" if floor else "- | -"
        products = ms.get(PRODUCTS + name)
        extra += f" | {products:.1f} | {ms[name] / products:.2f}" if products else " | - | -"
        print(f"| {name} | {ms[name]:.1f} | {extra} |")


if __name__ == "__main__":
    main()
