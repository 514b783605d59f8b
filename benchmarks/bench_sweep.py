"""Benchmark: Optuna searches side by side, by what they compare.

Runs `python train.py -m hydra/sweeper=optuna` with the same search space and
sampler seed, TRIALS trials of EPOCHS epochs, once per variant, alternately,
REPEATS times (sampler seeds 0, 1, ...), each search in a fresh directory:

- ``--compare pool`` (the default): the pool of stacks (``hydra/launcher=stacked``,
  its rung pruner) against the basic launcher (one trial at a time, its median pruner);
- ``--compare pruning``: the basic launcher's median pruner against no pruning.

Prints, per search, the wall time, when its last trial started (after the
first: the rest of the wall time is its tail, the last trials training out),
the epochs trained, the trials pruned and completed, the best trial's
validation and test accuracy and (pool) the occupancy of its slots; then the
medians and the wall-time ratio of the first variant to the second.

    .venv/bin/python benchmarks/bench_sweep.py [--compare pool|pruning] [--trials 40] [--epochs 200]
                                               [--repeats 1] [--only VARIANT] [--keep DIR] [overrides...]

``--keep DIR`` keeps each search's directory (trials, study, logs) under DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from hreg.search.study import EPOCHS_ATTR, FINAL_ATTR, database_url

REPO = Path(__file__).resolve().parents[1]
COMPARISONS = {
    "pool": {"pool": ["hydra/launcher=stacked"], "basic": ["hydra/launcher=basic"]},
    "pruning": {"median pruner": ["hydra/launcher=basic"],
                "no pruning": ["hydra/launcher=basic", "search.pruner=null"]},
}


def one_search(workdir: Path, overrides: list[str]) -> dict[str, float]:
    """Run one search in ``workdir``; read its outcome back from the study database."""
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=optuna", *overrides],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    sweep = workdir / "multirun" / "optuna" / "hreg"
    study = optuna.load_study(study_name="hreg", storage=database_url(sweep))
    best = study.best_trial
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    starts = [t.datetime_start for t in study.trials]
    return {
        "wall_s": wall_s,
        "last_start_s": (max(starts) - min(starts)).total_seconds(),
        "epochs": sum(t.system_attrs.get(EPOCHS_ATTR, 0) for t in study.trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
        "completed": sum(t.state == TrialState.COMPLETE for t in study.trials),
        "best_val_acc": best.value,
        "best_test_acc": best.system_attrs[FINAL_ATTR]["test_acc"],
        "occupancy": results.get("occupancy", float("nan")),
    }


def row(seed: object, name: str, s: dict[str, float]) -> str:
    return (f"| {seed} | {name} | {s['wall_s']:.0f} | {s['last_start_s']:.0f} | {s['epochs']:.0f} "
            f"| {s['pruned']:.0f} | {s['completed']:.0f} "
            f"| {s['best_val_acc']:.4f} | {s['best_test_acc']:.4f} | {s['occupancy']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=list(COMPARISONS), default="pool")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", help="run one variant only")
    parser.add_argument("--keep", type=Path, help="keep the searches' directories under this one")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every variant")
    args = parser.parse_args()
    base = [f"hydra.sweeper.n_trials={args.trials}", f"epochs={args.epochs}", *args.overrides]
    variants = COMPARISONS[args.compare]
    if args.only:
        variants = {args.only: variants[args.only]}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    print("| sampler seed | variant | wall (s) | last trial started (s) | epochs trained | trials pruned "
          "| trials completed | best val acc | its test acc | occupancy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with contextlib.ExitStack() as scope:
        tmp = args.keep or scope.enter_context(tempfile.TemporaryDirectory())
        for seed in range(args.repeats):
            for i, (name, extra) in enumerate(variants.items()):
                s = one_search(Path(tmp, f"{seed}-{i}"), [*base, f"hydra.sweeper.sampler.seed={seed}", *extra])
                samples[name].append(s)
                print(row(seed, name, s), flush=True)
    for name, runs in samples.items():
        print(row("median", name, {k: statistics.median(s[k] for s in runs) for k in runs[0]}))
    if len(samples) == 2:
        first, second = samples.values()
        ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(first, second)]
        print(f"\n`train.py -m hydra/sweeper=optuna {' '.join(base)}`, {args.repeats} sampler seed(s): "
              f"{' / '.join(variants)} wall time, median of the per-seed ratios: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
