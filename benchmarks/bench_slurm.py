"""Benchmark: hreg on a one-node SLURM cluster started here (tests/slurm.py; needs root and Debian's slurm-wlm,
slurmdbd, munge and mariadb-server, as `.ci/run` installs them).

- ``overhead``: JOBS jobs of EPOCHS epochs (seeds 0, 1, ...) through ``hydra/launcher=submitit_slurm`` and
  through ``submitit_local``, alternately, REPEATS times; the wall time of each multirun, their medians and
  the ratio. Each job takes one core (``cpus_per_task=1``, ``threads=1``): SLURM runs as many at once as the
  node has cores, submitit_local the whole batch at once.
- ``requeue``: one run of RUN_EPOCHS epochs on submitit_slurm with a time limit of one minute (its SIGUSR2
  ``signal_delay_s`` before it), evaluated every EVAL_EVERY epochs so that the limit cuts it, requeued up to 10
  times, each requeue released at once (SLURM holds a requeued job for two minutes). The epochs trained in all (each process's, from its
  log), against RUN_EPOCHS; the target: at most RUN_EPOCHS + requeues x ``checkpoint.every``.

    .venv/bin/python benchmarks/bench_slurm.py [--parts overhead,requeue] [--jobs 4] [--epochs 100]
                                               [--repeats 3] [--run-epochs 300] [--eval-every 4] [--signal-delay 10]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.slurm import PARTITION, SlurmCluster, available  # noqa: E402

LAUNCHERS = {
    "slurm": ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={PARTITION}", "hydra.launcher.cpus_per_task=1"],
    "local": ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1"],
}


def multirun(workdir: Path, cluster: SlurmCluster, *overrides: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *overrides, "hydra.sweep.dir=sweep"], cwd=workdir,
                   env=cluster.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def overhead(cluster: SlurmCluster, args: argparse.Namespace, root: Path) -> None:
    seeds = ",".join(str(i) for i in range(args.jobs))
    times: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    for repeat in range(args.repeats):
        for name, launcher in LAUNCHERS.items():
            workdir = root / f"{name}-{repeat}"
            workdir.mkdir()
            wall = multirun(workdir, cluster, *launcher, f"seed={seeds}", f"epochs={args.epochs}", "threads=1")
            times[name].append(wall)
            print(f"{name:5s} repeat {repeat}: {args.jobs} jobs x {args.epochs} epochs in {wall:.1f} s", flush=True)
    slurm, local = statistics.median(times["slurm"]), statistics.median(times["local"])
    print(f"median: submitit_slurm {slurm:.1f} s, submitit_local {local:.1f} s; ratio {slurm / local:.2f}x")


def epochs_trained(log: str, last_epoch: int) -> tuple[int, int]:
    """(epochs trained by all the run's processes, requeues), from its train.log: each process starts at epoch 1
    or at its ``resuming ... at epoch N`` and trains to its ``run stopped (interrupted) with M epochs`` or to the end."""
    starts = [1] + [int(n) for n in re.findall(r"resuming \S+ at epoch (\d+)", log)]
    stops = [int(n) for n in re.findall(r"run stopped \(interrupted\) with (\d+) epochs", log)] + [last_epoch]
    return sum(stop - start + 1 for start, stop in zip(starts, stops, strict=True)), len(starts) - 1


def requeue(cluster: SlurmCluster, args: argparse.Namespace, root: Path) -> None:
    workdir = root / "requeue"
    workdir.mkdir()
    every = 50
    command = [sys.executable, str(REPO / "train.py"), "-m", *LAUNCHERS["slurm"], "hydra.launcher.timeout_min=1",
               "hydra.launcher.max_num_timeout=10",
               f"hydra.launcher.signal_delay_s={args.signal_delay}", f"epochs={args.run_epochs}", f"eval_every={args.eval_every}",
               "monitor=none", f"checkpoint.every={every}", "hydra.sweep.dir=sweep"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=workdir, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        cluster.release_requeued()
        time.sleep(1)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"the requeued multirun failed (exit {proc.returncode}); see {workdir}")
    run_dir = workdir / "sweep" / "0"
    result = json.loads((run_dir / "result.json").read_text())
    trained, requeues = epochs_trained((run_dir / "train.log").read_text(), result["epochs_completed"])
    print(f"requeue: {result['status']}, {result['epochs_completed']} epochs, {requeues} requeues, "
          f"{trained} epochs trained in all (target: at most {args.run_epochs + requeues * every}); "
          f"{wall:.0f} s; resumed at {result.get('resumed_at_epoch')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="overhead,requeue")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-epochs", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=4, help="of the requeued run: slow enough to be cut")
    parser.add_argument("--signal-delay", type=int, default=10, help="seconds of warning before the one-minute limit")
    args = parser.parse_args()
    if not available():
        raise SystemExit("bench_slurm: needs root and slurm-wlm, slurmdbd, munge, mariadb-server (see .ci/run)")
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        root = Path(tmp)
        cluster = SlurmCluster(root / "cluster").start()
        print(f"cluster up in {cluster.startup_s:.1f} s", flush=True)
        try:
            for part in args.parts.split(","):
                {"overhead": overhead, "requeue": requeue}[part](cluster, args, root)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
