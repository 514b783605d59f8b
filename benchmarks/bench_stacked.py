"""Benchmark: what stacked training buys, measured side by side.

Its parts (``--parts``; throughput and study by default):

- ``throughput``: model-epochs per second of training (no evaluation, no hooks) of one
  native run against stacks of K = 1, 4, 8, 24 members, in this one process, repeated
  alternately; medians. Every member trains the default configuration with its own seed.
- ``study``: ``train.py -m experiment=compare_regularizers`` (its seeds) with the stacked
  launcher and with Hydra's basic launcher, alternately, in fresh processes; medians of
  the wall time.
- ``seeds`` (only when named): the study on stacks with each of ``--seeds`` seed counts
  against 3 seeds one by one on the basic launcher (the study before it moved to stacks),
  which is what the preset's number of seeds was chosen from.
- ``mixed`` (only when named): the study's stack that mixes normalisations (BatchNorm,
  LayerNorm, augment and combined, 3 seeds each) against the three stacks it replaces
  (3, 3 and 6), trained side by side in this process to ``--mixed-epochs``, in chunks of
  5 epochs taken alternately; training time by quarter and in all.

    .venv/bin/python benchmarks/bench_stacked.py [--parts throughput,study] [--device cpu]
        [--study-epochs 200] [--repeats 3]
        [--parts seeds --seeds 5,10 --study-epochs 100]
        [--parts mixed --mixed-epochs 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from floor import sync

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.conftest's compose_config


def throughput(device: str, repeats: int, sizes: list[int], epochs: int) -> None:
    import torch

    from hreg.build import build_context
    from hreg.engines.native import epoch_trainer
    from hreg.engines.stacked.stack import Member, Stack
    from tests.conftest import compose_config

    def memory() -> float:
        """Bytes in use: the GPU's peak allocation, or this process's resident memory."""
        if device == "cuda":
            return torch.cuda.max_memory_allocated()
        import psutil

        return psutil.Process().memory_info().rss

    work = Path(tempfile.mkdtemp())
    modes = ["eager", "CUDA graph"] if device == "cuda" else ["eager"]
    setting = {"eager": "false", "CUDA graph": "true"}
    trainers, footprint = {}, {}
    for mode in modes:
        ctx = build_context(compose_config("monitor=none", f"device={device}", f"train.cuda_graph={setting[mode]}"),
                            work / f"native-{mode}")
        trainers[f"native run, {mode}"] = (1, epoch_trainer(ctx))
        data = ctx.data
    for mode in modes:
        for k in sizes:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() if device == "cuda" else memory()
            members = [
                Member(str(i), build_context(compose_config("monitor=none", f"device={device}", f"seed={i}",
                                                            "data.seed=0", f"train.cuda_graph={setting[mode]}"),
                                             work / f"{mode}-{k}-{i}", data=data), [])
                for i in range(k)
            ]
            stack = Stack(members)
            stack.train_epoch()
            stack.evaluate()
            footprint[k] = (memory() - before) / 2**20  # the stack's own: members, a batch, an evaluation
            trainers[f"stack of {k}, {mode}"] = (k, stack.train_epoch)

    def rate(k: int, epoch: Callable[[], object]) -> float:
        epoch()  # warm-up (a graph is captured here)
        sync(device)
        started = time.perf_counter()
        for _ in range(epochs):
            epoch()
        sync(device)
        return k * epochs / (time.perf_counter() - started)

    samples: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(repeats):
        for name, (k, epoch) in trainers.items():
            samples[name].append(rate(k, epoch))
            print(f"  {name}: {samples[name][-1]:.1f} model-epochs/s", file=sys.stderr, flush=True)
    single = statistics.median(samples["native run, eager"])
    print(f"\nTraining throughput on {device} ({epochs} epochs a sample, {repeats} samples, medians):\n")
    print("| trained as | model-epochs/s | vs one eager native run |\n|---|---|---|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / single:.2f}x |")
    if len(sizes) > 1:
        per_member = (footprint[sizes[-1]] - footprint[sizes[0]]) / (sizes[-1] - sizes[0])
        print(f"\nmemory of a stack: {', '.join(f'{k}: {footprint[k]:.0f} MiB' for k in sizes)}; "
              f"per member (slope from {sizes[0]} to {sizes[-1]}): {per_member:.1f} MiB")


def timed(args: list[str], cwd: Path) -> float:
    """Wall time of `train.py ARGS`; its lines about stacks (their time, what it went to) are shown."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, check=True,
                          capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        if "Launching" in line or ("stack of" in line and " s (training" in line):
            print("   ", line.split(" - ", 1)[-1], file=sys.stderr)
    return time.perf_counter() - started


def study(device: str, repeats: int, epochs: int, variants: dict[str, list[str]]) -> None:
    """`train.py -m experiment=compare_regularizers` with each variant's extra overrides, alternately."""
    base = ["-m", "experiment=compare_regularizers", f"epochs={epochs}", f"device={device}"]
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, extra in variants.items():
            with tempfile.TemporaryDirectory() as work:
                samples[name].append(timed([*base, *extra], Path(work)))
            print(f"  {name} #{repeat + 1}: {samples[name][-1]:.1f} s", file=sys.stderr, flush=True)
    print(f"\n`train.py {' '.join(base)}` with each variant's overrides, {repeats} alternating runs each, medians:\n")
    print("| variant | overrides | wall (s) |\n|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | `{' '.join(variants[name])}` | {statistics.median(values):.1f} |")
    last = list(samples)[-1]
    for name in list(samples)[:-1]:
        ratios = [b / s for s, b in zip(samples[name], samples[last])]
        print(f"{last} / {name}, median of the paired ratios: {statistics.median(ratios):.2f}x")


def launchers(names: list[str]) -> dict[str, list[str]]:
    """The study's jobs (the preset's seeds) on each named launcher."""
    return {f"{name} launcher": [f"hydra/launcher={name}"] for name in names}


def seeds(counts: list[int]) -> dict[str, list[str]]:
    """The study on stacks with each count of seeds, then with 3 seeds one by one (the last: the reference)."""
    variants = {f"{n} seeds on stacks": ["hydra/launcher=stacked", "seed=" + ",".join(map(str, range(n)))]
                for n in counts}
    variants["3 seeds one by one (basic launcher)"] = ["hydra/launcher=basic", "seed=0,1,2"]
    return variants


def mixed(device: str, epochs: int, chunk: int = 5) -> None:
    from hreg.build import build_context
    from hreg.engines.stacked.stack import Member, Stack
    from tests.conftest import compose_config

    variants = ["batchnorm", "layernorm", "augment", "combined"]
    work = Path(tempfile.mkdtemp())

    def stack(name: str, members: list[str]) -> Stack:
        return Stack([Member(f"{v}-{s}", build_context(compose_config("monitor=none", f"device={device}",
                                                                       f"variant={v}", f"seed={s}"),
                                                        work / f"{name}-{v}-{s}"), [])
                      for v in members for s in range(3)])

    layouts = {"mixed (12)": [stack("mixed", variants)],
               "separate (3, 3, 6)": [stack("separate", variants[:1]), stack("separate", variants[1:2]),
                                      stack("separate", variants[2:])]}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    rounds = epochs // chunk
    for r in range(rounds):
        order = list(layouts) if r % 2 == 0 else list(reversed(layouts))
        for name in order:
            sync(device)
            started = time.perf_counter()
            for _ in range(chunk):
                for s in layouts[name]:
                    s.train_epoch()
            sync(device)
            times[name].append(time.perf_counter() - started)
    mixed_name, separate_name = layouts
    print(f"\nTraining the study's mixed stack against its three stacks on {device} ({epochs} epochs):\n")
    print("| epochs | mixed (s) | separate (s) | ratio |\n|---|---|---|---|")
    quarter = max(rounds // 4, 1)
    for start in range(0, rounds, quarter):
        a, b = (sum(times[n][start:start + quarter]) for n in (mixed_name, separate_name))
        print(f"| {start * chunk + 1}-{min(start + quarter, rounds) * chunk} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    a, b = sum(times[mixed_name]), sum(times[separate_name])
    print(f"| all | {a:.1f} | {b:.1f} | {a / b:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="throughput,study")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1,4,8,24", help="stack sizes for the throughput part")
    parser.add_argument("--epochs", type=int, default=20, help="epochs a throughput sample")
    parser.add_argument("--study-epochs", type=int, default=200)
    parser.add_argument("--launchers", default="stacked,basic", help="for the study part")
    parser.add_argument("--seeds", default="10", help="seed counts on stacks, for the seeds part")
    parser.add_argument("--mixed-epochs", type=int, default=200)
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "throughput" in parts:
        throughput(args.device, args.repeats, [int(k) for k in args.sizes.split(",")], args.epochs)
    if "study" in parts:
        study(args.device, args.repeats, args.study_epochs, launchers(args.launchers.split(",")))
    if "seeds" in parts:
        study(args.device, args.repeats, args.study_epochs, seeds([int(n) for n in args.seeds.split(",")]))
    if "mixed" in parts:
        mixed(args.device, args.mixed_epochs)


if __name__ == "__main__":
    main()
