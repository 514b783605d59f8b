"""Benchmark: what each augmentation costs per training epoch, against no augmentation.

Trains the default model for EPOCHS epochs with each `augment` option (and the affine
ones once more with `augment.per_image=false`, one draw per batch), in this one process,
round after round so that every option sees the same machine load; prints the median
seconds per epoch and the ratio to no augmentation.

    .venv/bin/python benchmarks/bench_augment.py [--epochs 20] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.conftest's compose_config

VARIANTS = {
    "none": ["augment=none"],
    "noise": ["augment=noise"],
    "affine, per batch": ["augment=affine", "augment.per_image=false"],
    "affine, per image": ["augment=affine"],
    "noise_affine, per image": ["augment=noise_affine"],
    "elastic, per image": ["augment=elastic"],
    "elastic_affine, per image": ["augment=elastic_affine"],
}


def main() -> None:
    import torch

    from hreg.build import build_context
    from hreg.engines.native import train_epoch
    from tests.conftest import compose_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    contexts = {}
    for name, overrides in VARIANTS.items():
        cfg = compose_config("monitor=none", f"device={args.device}", *overrides)
        contexts[name] = build_context(cfg, work / name.replace(" ", "").replace(",", "-"),
                                       data=next(iter(contexts.values())).data if contexts else None)
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, ctx in contexts.items():
            epoch = lambda: train_epoch(ctx.model, ctx.data.train, 300, ctx.optimizer, ctx.penalty, ctx.augment)  # noqa: E731
            epoch()
            if args.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(args.epochs):
                epoch()
            samples[name].append((time.perf_counter() - started) / args.epochs)
    base = statistics.median(samples["none"])
    print(f"\nSeconds per training epoch on {args.device} (3000 images, batches of 300; median of {args.repeats} "
          f"samples of {args.epochs} epochs, eager loop):\n")
    print("| augment | ms per epoch | vs none |\n|---|---|---|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.1f} | {median / base:.2f}x |")
    per_image, per_batch = (statistics.median(samples[k]) for k in ("affine, per image", "affine, per batch"))
    print(f"\naffine per image / per batch: {per_image / per_batch:.2f}x")


if __name__ == "__main__":
    main()
