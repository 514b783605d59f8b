"""Benchmark: what a search finds against the time it takes.

Runs the default search, `python train.py -m hydra/sweeper=optuna` (the pool of
stacks, its rung pruner, 40 trials x 1000 epochs), once per sampler seed
(0, 1, ... SEEDS-1), each in a fresh directory, and reads its study back: for
every completed trial (one a user could select), when it completed. A search's
curve is the best validation accuracy among the trials completed so far against
wall time; the test accuracy of the selected trial is read from its record.

Prints a row per search (wall time, trials completed and pruned, epochs
trained, the selected trial's validation and test accuracy, when it completed)
and their medians, and draws every search's curve on one figure (``--figure``).
``--basic`` runs the same search on the basic launcher once, after the pool's;
``--reference MINUTES:VAL:TEST:LABEL`` draws an earlier measured search as a
point instead (for example the basic launcher's of 2026-12-04:
``29.15:0.9834:0.9844:basic launcher, 2026-12-04``).

    .venv/bin/python benchmarks/bench_quality.py [--seeds 3] [--basic] [--reference ...]
                                                 [--figure quality.png] [--keep DIR] [overrides...]
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
from optuna.trial import TrialState

from hreg.search.study import EPOCHS_ATTR, FINAL_ATTR, database_url

REPO = Path(__file__).resolve().parents[1]
#: The issue's budget for the default search on this project's 2-core CPU.
TARGET_MINUTES = 10


def search(workdir: Path, overrides: list[str]) -> dict:
    """One search in ``workdir``: its wall time and, per completed trial, (minutes since the start, val, test)."""
    workdir.mkdir(parents=True)
    started = time.time()
    subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=optuna", *overrides],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall_s = time.time() - started
    study = optuna.load_study(study_name="hreg", storage=database_url(workdir / "multirun" / "optuna" / "hreg"))
    completed = sorted((t.datetime_complete.timestamp() - started, t.value, t.system_attrs[FINAL_ATTR]["test_acc"])
                       for t in study.trials if t.state == TrialState.COMPLETE)
    return {"wall_s": wall_s, "completed": completed,
            "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
            "epochs": sum(t.system_attrs.get(EPOCHS_ATTR, 0) for t in study.trials)}


def selected(outcome: dict) -> tuple[float, float, float]:
    """The trial the search selects (the best validation accuracy among completed ones): (s, val, test)."""
    return max(outcome["completed"], key=lambda c: c[1], default=(float("nan"),) * 3)


def curve(outcome: dict) -> tuple[list[float], list[float]]:
    """Minutes and the best validation accuracy among the trials completed by then, as steps."""
    minutes, best = [], []
    for seconds, value, _ in outcome["completed"]:
        if not best or value > best[-1]:
            minutes.append(seconds / 60)
            best.append(value)
    if best:
        minutes.append(outcome["wall_s"] / 60)
        best.append(best[-1])
    return minutes, best


def row(name: str, outcome: dict) -> str:
    seconds, val, test = selected(outcome)
    return (f"| {name} | {outcome['wall_s']:.0f} | {len(outcome['completed'])} | {outcome['pruned']} "
            f"| {outcome['epochs']} | {val:.4f} | {test:.4f} | {seconds:.0f} |")


def draw(path: Path, outcomes: dict[str, dict], references: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    blues = iter(plt.get_cmap("Blues")([0.9, 0.7, 0.5, 0.35, 0.25]))
    for name, outcome in outcomes.items():
        minutes, best = curve(outcome)
        color = "tab:orange" if name.startswith("basic") else next(blues, "tab:blue")
        ax.step(minutes, best, where="post", marker=".", color=color,
                label=f"{name}: {selected(outcome)[1]:.4f} val, {selected(outcome)[2]:.4f} test")
    for reference in references:
        minutes, val, test, label = reference.split(":", 3)
        ax.plot([float(minutes)], [float(val)], "s", color="tab:orange", label=f"{label}: {val} val, {test} test")
    ax.axvline(TARGET_MINUTES, ls=":", color="gray", label=f"target: {TARGET_MINUTES} minutes")
    ax.set_xlim(left=0)
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("best validation accuracy among completed trials")
    ax.set_title("python train.py -m hydra/sweeper=optuna")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds 0 .. SEEDS-1, one pool search each")
    parser.add_argument("--basic", action="store_true", help="also run the basic launcher's search once (seed 0)")
    parser.add_argument("--reference", action="append", default=[], help="MINUTES:VAL:TEST:LABEL, drawn as a point")
    parser.add_argument("--figure", type=Path, default=Path("quality.png"))
    parser.add_argument("--keep", type=Path, help="keep the searches' directories under this one")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every search")
    args = parser.parse_args()
    runs = {f"pool, seed {seed}": [f"hydra.sweeper.sampler.seed={seed}"] for seed in range(args.seeds)}
    if args.basic:
        runs["basic launcher, seed 0"] = ["hydra.sweeper.sampler.seed=0", "hydra/launcher=basic"]
    outcomes: dict[str, dict] = {}
    print("| search | wall (s) | completed | pruned | epochs trained | selected val acc | its test acc "
          "| completed at (s) |")
    print("|---|---|---|---|---|---|---|---|")
    with contextlib.ExitStack() as scope:
        tmp = args.keep or scope.enter_context(tempfile.TemporaryDirectory())
        for i, (name, extra) in enumerate(runs.items()):
            outcomes[name] = search(Path(tmp, str(i)), [*extra, *args.overrides])
            print(row(name, outcomes[name]), flush=True)
    pool = [o for name, o in outcomes.items() if name.startswith("pool")]
    medians = [statistics.median(v) for v in zip(*(selected(o) for o in pool))]
    print(f"\npool, median of {len(pool)}: wall {statistics.median(o['wall_s'] for o in pool):.0f} s, "
          f"{statistics.median(len(o['completed']) for o in pool):.0f} completed, "
          f"selected {medians[1]:.4f} val / {medians[2]:.4f} test acc")
    draw(args.figure, outcomes, args.reference)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
