"""Benchmark: stacked members against native runs, in accuracy (the figures behind the equivalence test).

Trains each variant of the test's ``VARIANTS`` (tests/test_stacked.py) with each seed, once by the
native loop and once as members of a single stack holding all of them (as the test does), for the
test's epochs (``EQUIVALENCE``), and prints each variant's mean final validation accuracy in both engines.

    .venv/bin/python benchmarks/bench_equivalence.py [--variants none,l1,...] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test's variants and tests.conftest's compose_config


def seeds(text: str) -> list[int]:
    """'0,1,2' or a range '8-23'."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    from tests.test_stacked import EQUIVALENCE, VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="0,1,2 or 8-23")
    args = parser.parse_args()

    from hreg.build import build_context, build_hooks
    from hreg.run import train
    from hreg.engines.stacked.stack import Member, fit_stack
    from tests.conftest import compose_config

    variants = args.variants.split(",")
    work = Path(tempfile.mkdtemp())
    native = {v: [train(compose_config(*EQUIVALENCE, *VARIANTS[v], f"seed={s}"), work / f"n-{v}-{s}").final["val_acc"]
                  for s in args.seeds] for v in variants}
    members, results = [], {v: [] for v in variants}
    for v in variants:
        for s in args.seeds:
            ctx = build_context(compose_config(*EQUIVALENCE, *VARIANTS[v], f"seed={s}"), work / f"s-{v}-{s}")
            members.append(Member(f"{v}/{s}", ctx, build_hooks(ctx)))
            results[v].append(ctx.result)
    fit_stack(members, seed=0)
    print(f"\nFinal val acc, seeds {args.seeds}, one stack of {len(members)} against native runs:\n")
    print("| variant | native mean (std) | stacked mean (std) | stacked - native (points) |\n|---|---|---|---|")
    for v in variants:
        stacked = [r.final["val_acc"] for r in results[v]]
        spread = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in (native[v], stacked)]
        a, b = statistics.mean(native[v]), statistics.mean(stacked)
        print(f"| {v} | {a:.4f} ({spread[0]:.4f}) | {b:.4f} ({spread[1]:.4f}) | {100 * (b - a):+.2f} |")


if __name__ == "__main__":
    main()
