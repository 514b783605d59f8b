"""Benchmark: wall time of the default 1000-epoch run, two variants side by side.

``--compare logging`` (default): `python train.py` against `python train.py monitor=none`;
``--compare graph``: the epoch as a CUDA graph (`train.cuda_graph=true`) against the eager
loop (`train.cuda_graph=false`), for a GPU (add `device=cuda`);
``--compare engine``: hreg's own loop against the Lightning engine (`engine=lightning`);
``--compare fused``: Adam's fused kernel (the config's default) against torch's default (`optimizer.fused=false`);
``--compare startup --epochs 1``: `train.py epochs=1 monitor=none device=cpu`, the start-up of a run;
``--compare floor``: `train.py monitor=none` against the run's floor (floor.py: its FLOPs at this CPU's
best GEMM rate, measured just before each run), the ratio the epoch's speed is judged by, and against
its matrix products alone at the run's own shapes (``floor.run_gemm_seconds``, measured beside it).

The two variants run alternately, REPEATS times each, in fresh processes, and it prints
the medians: the whole process (start-up, data, training, evaluation, logging), where it
went (from the run's train.log: imports and Hydra's composition until the run's first log
line; building the run until its ``data:`` line (device, model, optimizer, data); the
training loop, result.json's wall_time_s; what follows it until the process exits), the
ratio of the two variants, and the size of a run's event files. Alternating makes the
ratio fair on a shared, noisy machine.

    .venv/bin/python benchmarks/bench_run.py [--compare logging|graph|engine|fused|startup] [--repeats 5] [--epochs 1000]
        [extra overrides...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from floor import peak_rate, run_flops, run_gemm_seconds
from hreg.metrics import EVAL_CHUNK

REPO = Path(__file__).resolve().parents[1]
EVAL_EVERY = 10  # conf/config.yaml's
COMPARISONS = {
    "logging": {"logging on (default)": [], "logging off (monitor=none)": ["monitor=none"]},
    "graph": {"CUDA graph (train.cuda_graph=true)": ["train.cuda_graph=true"],
              "eager loop (train.cuda_graph=false)": ["train.cuda_graph=false"]},
    "engine": {"native engine (default)": [], "Lightning engine (engine=lightning)": ["engine=lightning"]},
    "fused": {"fused Adam (default)": [], "foreach Adam (optimizer.fused=false)": ["optimizer.fused=false"]},
    "startup": {"start-up (monitor=none device=cpu, with --epochs 1)": ["monitor=none", "device=cpu"]},
    "floor": {"default run (monitor=none device=cpu)": ["monitor=none", "device=cpu"]},
}


def logged_at(line: str) -> float:
    """The time stamp of a train.log line (Hydra's ``[2026-11-27 16:10:27,932][hreg][INFO] - ...``), in seconds."""
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def one_run(workdir: Path, name: str, overrides: list[str]) -> dict[str, float]:
    run_dir = workdir / name
    started_at, started = time.time(), time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    process_s = time.perf_counter() - started
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed", result["status"]
    lines = (run_dir / "train.log").read_text().splitlines()
    first = logged_at(lines[0]) - started_at
    built = logged_at(next(line for line in lines if "] - data: " in line)) - started_at
    events = sum(p.stat().st_size for p in run_dir.glob("events.out.tfevents.*"))
    return {"process_s": process_s, "before_s": first, "build_s": built - first, "loop_s": result["wall_time_s"],
            "after_s": process_s - built - result["wall_time_s"], "events_mb": events / 1e6,
            "val_acc": result["final"]["val_acc"]}


def measure_floors(epochs: int) -> dict[str, float]:
    """The run's floor (its FLOPs at the best GEMM rate) and its matrix products' time at its shapes, in seconds."""
    return {"floor_s": run_flops(epochs, EVAL_EVERY) / peak_rate(),
            "gemm_s": run_gemm_seconds("cpu", EVAL_CHUNK["cpu"], epochs, EVAL_EVERY)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=list(COMPARISONS), default="logging")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for both variants")
    args = parser.parse_args()
    variants = COMPARISONS[args.compare]
    base = [f"epochs={args.epochs}", *args.overrides]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, extra) in enumerate(variants.items()):
                floors = measure_floors(args.epochs) if args.compare == "floor" else {}
                samples[name].append(one_run(Path(tmp), f"{repeat}-{i}", base + extra) | floors)
                if floors:
                    samples[name][-1] |= {"x_floor": samples[name][-1]["loop_s"] / floors["floor_s"],
                                          "x_gemm": samples[name][-1]["loop_s"] / floors["gemm_s"]}
                print(f"  {name} #{repeat + 1}: {samples[name][-1]}", file=sys.stderr, flush=True)
    medians = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items()}
    print(f"{args.repeats} runs each, alternating, `train.py {' '.join(base)}`:")
    print("| variant | median process wall (s) | imports, config (s) | build (s) | training loop (s) | after (s) "
          "| event files (MB) | final val acc |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m['process_s']:.1f} | {m['before_s']:.1f} | {m['build_s']:.1f} | {m['loop_s']:.1f} "
              f"| {m['after_s']:.1f} | {m['events_mb']:.2f} | {m['val_acc']:.4f} |")
    for name, m in medians.items():
        if "floor_s" in m:
            print(f"{name}: training loop {m['loop_s']:.1f} s, floor {m['floor_s']:.1f} s "
                  f"({run_flops(args.epochs, EVAL_EVERY) / 1e12:.2f} TFLOP at the best GEMM rate measured just "
                  f"before each run): {m['x_floor']:.2f}x the floor (median of the per-run ratios); its matrix "
                  f"products alone at the run's shapes {m['gemm_s']:.1f} s ({m['gemm_s'] / m['floor_s']:.2f}x the "
                  f"floor), the loop {m['x_gemm']:.2f}x them")
    if len(medians) == 2:
        first, second = medians.values()
        print(f"first / second: training loop {first['loop_s'] / second['loop_s']:.3f}x; "
              f"whole process {first['process_s'] / second['process_s']:.3f}x")


if __name__ == "__main__":
    main()
