"""Benchmark: a run's two most frequent pieces of bookkeeping.

- ``result.json``: a run's saves, one at each of ``--evaluations`` evaluations (101: a default
  1000-epoch run), each encoded whole by ``RunResult.to_json``: all of them, and one more save of
  the whole record. What a run pays for writing its record in plain JSON at every evaluation.
- A TensorBoard snapshot's nine histograms (four layers' weights, four layers' input gradients
  on a batch of 300, the entropies of the probe set), on the CPU: ``hreg.monitor.histogram`` and
  ``add_histogram_raw`` against ``SummaryWriter.add_histogram``.

Both histogram writers write the same bytes (tests/test_monitor.py). Milliseconds, the
best of ``--repeats`` alternating rounds of ``--number`` calls (a fifth of them for snapshots); one thread, as the bookkeeping runs.

    .venv/bin/python benchmarks/bench_bookkeeping.py [--evaluations 101] [--repeats 5] [--number 50]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import timeit
from collections.abc import Callable

import torch
from torch.utils.tensorboard import SummaryWriter

from hreg.monitor import histogram
from hreg.result import RunResult

#: The sizes of a snapshot's histograms for the default MLP (784-100-100-100-10, batch 300, 1000 probe images).
SNAPSHOT = {"weights/fc1": 784 * 100, "weights/fc2": 100 * 100, "weights/fc3": 100 * 100, "weights/fc4": 100 * 10,
            "input_grad/fc1": 300 * 784, "input_grad/fc2": 300 * 100, "input_grad/fc3": 300 * 100,
            "input_grad/fc4": 300 * 100, "entropy/model": 1000}


def best_ms(calls: list, repeats: int, number: int) -> list[float]:
    """The best time of each call, in rounds that alternate between them (a shared machine drifts)."""
    times = [[timeit.timeit(call, number=number) for call in calls] for _ in range(repeats)]
    return [min(column) / number * 1e3 for column in zip(*times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=101)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--number", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)

    keys = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("loss", "acc")] + ["penalty"]
    evaluations = [{"epoch": epoch, **{key: rng.random() for key in keys}} for epoch in range(args.evaluations)]

    def new_record() -> RunResult:
        return RunResult("val_acc", {"model": {"hidden": [100, 100, 100]}, "seed": 0}, epochs=1000)

    def saves(encode: Callable[[RunResult], object]) -> None:
        """A run's saves: an evaluation recorded, then the record encoded, as ``Lifecycle.end_epoch`` does."""
        record = new_record()
        for metrics in evaluations:
            record.record(dict(metrics))
            encode(record)

    number = max(1, args.number // 10)
    (all_ms,) = best_ms([lambda: saves(RunResult.to_json)], args.repeats, number)
    print(f"result.json, a run's {args.evaluations} saves: {all_ms:.1f} ms in all")
    last = new_record()
    for metrics in evaluations:
        last.record(dict(metrics))
    (one_ms,) = best_ms([last.to_json], args.repeats, args.number)
    print(f"  one more save of the {args.evaluations}: {one_ms:.3f} ms")

    generator = torch.Generator().manual_seed(0)
    values = {tag: torch.randn(size, generator=generator) * 0.05 for tag, size in SNAPSHOT.items()}
    with tempfile.TemporaryDirectory() as log_dir:
        writer = SummaryWriter(log_dir)
        edges = torch.tensor(writer.default_bins, dtype=torch.float64)

        def hreg_snapshot() -> None:
            for tag, v in values.items():
                writer.add_histogram_raw(tag, **histogram(v, edges), global_step=1)

        def tensorboard_snapshot() -> None:
            for tag, v in values.items():
                writer.add_histogram(tag, v, 1)

        hreg_ms, tb_ms = best_ms([hreg_snapshot, tensorboard_snapshot], args.repeats, args.number // 5 or 1)
        writer.close()
    print(f"a snapshot's {len(SNAPSHOT)} histograms: hreg.monitor.histogram {hreg_ms:.2f} ms, "
          f"add_histogram {tb_ms:.2f} ms")


if __name__ == "__main__":
    main()
