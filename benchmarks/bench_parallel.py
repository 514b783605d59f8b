"""Benchmark: two jobs run at once by `hydra/launcher=submitit_local`, against the same two one after the other.

Both variants run `python train.py -m seed=0,1 epochs=EPOCHS hydra/launcher=submitit_local` (the basic
sweeper hands both jobs to the launcher, which starts them together); "one after the other" adds
`hydra.sweeper.max_batch_size=1`. With `threads=auto` a job started beside another takes half the
cores, a job alone all of them. Alternating, REPEATS times, each in a fresh directory; prints every wall
time (whole command: sweeper, job start-up, training), the medians and the at-once / sequential ratio.
`--unshared` adds the at-once variant with every job on every core (`threads=CORES`), as before the setting:
the oversubscription it avoids (slow: run it with fewer epochs).

    .venv/bin/python benchmarks/bench_parallel.py [--epochs 300] [--repeats 3] [--unshared] [overrides...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hreg.threads import cpu_cores

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], cwd: Path) -> float:
    """Wall seconds of `python train.py ARGS` in ``cwd`` (a failure stops the benchmark)."""
    cwd.mkdir()
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unshared", action="store_true", help="also: both at once, each with every core")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every variant")
    args = parser.parse_args()
    base = ["-m", "seed=0,1", f"epochs={args.epochs}", "hydra/launcher=submitit_local", *args.overrides]
    variants = {
        "both at once (threads=auto)": [],
        "one after the other": ["hydra.sweeper.max_batch_size=1"],
    }
    if args.unshared:
        variants[f"both at once, threads={cpu_cores()} each"] = [f"threads={cpu_cores()}"]
    walls: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for index, (name, extra) in enumerate(variants.items()):
                wall = timed(base + extra, Path(tmp, f"{repeat}-{index}"))
                walls[name].append(wall)
                print(f"repeat {repeat}: {name}: {wall:.1f} s", flush=True)
    print(f"\n{cpu_cores()} cores, 2 jobs of {args.epochs} epochs, medians of {args.repeats}:")
    medians = {name: statistics.median(values) for name, values in walls.items()}
    for name, median in medians.items():
        print(f"  {name:40s} {median:7.1f} s")
    at_once, sequential = medians["both at once (threads=auto)"], medians["one after the other"]
    print(f"  at once / one after the other: {at_once / sequential:.2f}x")


if __name__ == "__main__":
    main()
