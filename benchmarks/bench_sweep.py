"""Benchmark: what pruning saves in an Optuna search, side by side with the same search unpruned.

Runs `python train.py -m hydra/sweeper=optuna` with a fixed sampler seed, TRIALS
trials of EPOCHS epochs, once with the shipped median pruner and once with
`search.pruner=null`, alternately, REPEATS times (sampler seeds 0, 1, ...), each
search in a fresh directory. Prints, per search, the wall time, the epochs
trained, the trials pruned, and the best trial's validation and test accuracy;
then the medians and the pruned / unpruned wall-time ratio.

    .venv/bin/python benchmarks/bench_sweep.py [--trials 20] [--epochs 200] [--repeats 3] [overrides...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hreg.search.study import EPOCHS_ATTR, FINAL_ATTR, database_url

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"median pruner (default)": [], "no pruning (search.pruner=null)": ["search.pruner=null"]}


def one_search(workdir: Path, overrides: list[str]) -> dict[str, float]:
    """Run one search in ``workdir``; read its outcome back from the study database."""
    workdir.mkdir()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=optuna", *overrides],
        cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wall_s = time.perf_counter() - started
    study = optuna.load_study(study_name="hreg", storage=database_url(workdir / "multirun" / "optuna" / "hreg"))
    best = study.best_trial
    return {
        "wall_s": wall_s,
        "epochs": sum(t.system_attrs.get(EPOCHS_ATTR, 0) for t in study.trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
        "best_val_acc": best.value,
        "best_test_acc": best.system_attrs[FINAL_ATTR]["test_acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for both variants")
    args = parser.parse_args()
    base = [f"hydra.sweeper.n_trials={args.trials}", f"epochs={args.epochs}", *args.overrides]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    print("| sampler seed | variant | wall (s) | epochs trained | trials pruned | best val acc | its test acc |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.repeats):
            for i, (name, extra) in enumerate(VARIANTS.items()):
                s = one_search(Path(tmp, f"{seed}-{i}"), [*base, f"hydra.sweeper.sampler.seed={seed}", *extra])
                samples[name].append(s)
                print(f"| {seed} | {name} | {s['wall_s']:.0f} | {s['epochs']:.0f} | {s['pruned']:.0f} "
                      f"| {s['best_val_acc']:.4f} | {s['best_test_acc']:.4f} |", flush=True)
    medians = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items()}
    for name, m in medians.items():
        print(f"| median | {name} | {m['wall_s']:.0f} | {m['epochs']:.0f} | {m['pruned']:.0f} "
              f"| {m['best_val_acc']:.4f} | {m['best_test_acc']:.4f} |")
    ratios = [p["wall_s"] / u["wall_s"] for p, u in zip(*samples.values())]
    print(f"\n`train.py -m hydra/sweeper=optuna {' '.join(base)}`, {args.repeats} sampler seeds: "
          f"pruned / unpruned wall time, median of the per-seed ratios: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
