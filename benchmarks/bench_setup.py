"""Benchmark: a new user's set-up, on fresh clones of this repository, with the README's two commands.

For each of REPEATS fresh clones (``git clone`` of this checkout's HEAD into a
temporary directory), with an empty uv cache of its own (the machine's local
wheels and pip's own cache stay, as a user's would):

- ``setup``: ``make data``, everything before the first epoch (uv, the venv from
  the lock, hreg, MNIST checked or provisioned);
- ``train``: then ``make train``, the default run (the venv is ready by then);
- ``ci``: ``bash .ci/run`` in another fresh clone (the venv, MNIST and the whole
  test suite; its last line gives the tests' own time).

Prints each time, the medians, and the number of packages in the built venv.

    .venv/bin/python benchmarks/bench_setup.py [--parts setup,train,ci] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - started, proc.stdout + proc.stderr


def fresh_clone(tmp: Path, name: str) -> tuple[Path, dict[str, str]]:
    clone = tmp / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    return clone, {**os.environ, "UV_CACHE_DIR": str(tmp / f"{name}-uv-cache")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="setup,train")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    parts = args.parts.split(",")
    times: dict[str, list[float]] = {part: [] for part in parts}
    print("| repeat | part | seconds | note |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            if {"setup", "train"} & set(parts):
                clone, env = fresh_clone(Path(tmp), f"user{i}")
                seconds, _ = timed(["make", "data"], clone, env)
                packages = subprocess.run([str(clone / ".venv/bin/python"), "-m", "pip", "list"],
                                          capture_output=True, text=True).stdout.count("\n") - 2
                if "setup" in parts:
                    times["setup"].append(seconds)
                    print(f"| {i} | setup (`make data`) | {seconds:.1f} | {packages} packages in .venv |", flush=True)
                if "train" in parts:
                    seconds, out = timed(["make", "train"], clone, env)
                    times["train"].append(seconds)
                    summary = re.search(r"completed: .*?test acc [0-9.]+", out)
                    print(f"| {i} | `make train` | {seconds:.1f} | {summary.group(0) if summary else ''} |",
                          flush=True)
            if "ci" in parts:
                clone, env = fresh_clone(Path(tmp), f"ci{i}")
                seconds, out = timed(["bash", ".ci/run"], clone, env)
                times["ci"].append(seconds)
                closing = [line for line in out.splitlines() if re.search(r"\d+ passed", line)][-1:]
                print(f"| {i} | `bash .ci/run` | {seconds:.1f} | {closing[0].strip('= ') if closing else ''} |",
                      flush=True)
    for part, values in times.items():
        if values:
            print(f"| median | {part} | {statistics.median(values):.1f} | of {len(values)} |")


if __name__ == "__main__":
    main()
