"""Benchmark: wall time of the default 1000-epoch run, with and without TensorBoard logging.

Runs `python train.py` (the default experiment) and `python train.py monitor=none`
alternately, REPEATS times each, in fresh processes, and prints the medians:
the whole process (start-up, data, training, evaluation, logging) and the
training loop alone (result.json's wall_time_s), the logging overhead ratio, and
the size of a run's event files. Alternating the two configurations makes the
ratio fair on a shared, noisy machine.

    .venv/bin/python benchmarks/bench_run.py [--repeats 5] [--epochs 1000] [extra overrides...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"logging on (default)": [], "logging off (monitor=none)": ["monitor=none"]}


def one_run(workdir: Path, name: str, overrides: list[str]) -> dict[str, float]:
    run_dir = workdir / name
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    process_s = time.perf_counter() - started
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed", result["status"]
    events = sum(p.stat().st_size for p in run_dir.glob("events.out.tfevents.*"))
    return {"process_s": process_s, "loop_s": result["wall_time_s"], "events_mb": events / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for both variants")
    args = parser.parse_args()
    base = [f"epochs={args.epochs}", *args.overrides]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, extra) in enumerate(VARIANTS.items()):
                samples[name].append(one_run(Path(tmp), f"{repeat}-{i}", base + extra))
                print(f"  {name} #{repeat + 1}: {samples[name][-1]}", file=sys.stderr)
    medians = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items()}
    print(f"{args.repeats} runs each, alternating, `train.py {' '.join(base)}`:")
    print("| variant | median process wall (s) | median training loop (s) | event files (MB) |")
    print("|---|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m['process_s']:.1f} | {m['loop_s']:.1f} | {m['events_mb']:.2f} |")
    on, off = (medians[name] for name in VARIANTS)
    print(f"logging overhead (on / off, training loop): {on['loop_s'] / off['loop_s']:.3f}x; "
          f"whole process: {on['process_s'] / off['process_s']:.3f}x")


if __name__ == "__main__":
    main()
