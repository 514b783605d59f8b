#!/usr/bin/env bash
# The GPU checks behind the GPU figures (benchmarks/README.md), on any CUDA machine with the project's
# environment (`make data` first): from the project root,
#   PATH=.venv/bin:$PATH bash benchmarks/gpu_checks.sh [steps]
# Steps (all by default, in this order: the unmeasured targets before the figures that exist), each with
# its limit in seconds:
#   smoke 45, tests 150, study 110, search 180, mixed 60 | bench_run 100, throughput 60, profile 40, lightning 60
# A step runs only if its whole limit fits in what is left of BUDGET (default 560 s from the script's
# start); the others are listed at the end, with the command that runs them. With the default budget the
# five before the bar fit in a first call; run the printed command as the second call at once (the
# machine may go back when idle). Logs, and the profile of a run's start (startup.prof, for
# `python -m pstats`), go to $OUT (or gpu-results/).
set -u
out=${OUT:-gpu-results}
budget=${BUDGET:-560}
mkdir -p "$out"
steps=${1:-"smoke tests study search mixed bench_run throughput profile lightning"}
skipped=()
step() {
  local name=$1 limit=$2; shift 2
  [[ " $steps " == *" $name "* ]] || return 0
  if (( SECONDS + limit > budget )); then
    skipped+=("$name")
    echo "== $name: skipped (up to $limit s; $((budget - SECONDS)) s of the budget left)"
    return 0
  fi
  local started=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name: rc=$? in $((SECONDS - started)) s (limit $limit s)"
  tail -n 22 "$out/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
hreg-mnist  # verifies the store and builds the normalised cache, so that no timed run pays for it
step smoke 45 python3 train.py -m hydra/launcher=stacked seed=0,1,2 epochs=30 device=cuda hydra.sweep.dir=/tmp/smoke
step tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_graph.py
step study 110 python3 benchmarks/bench_stacked.py --parts study --device cuda --study-epochs 1000 --repeats 1 \
  --launchers stacked
step search 180 python3 benchmarks/bench_sweep.py --only pool --trials 40 --epochs 1000 device=cuda
step mixed 60 python3 benchmarks/bench_stacked.py --parts mixed --device cuda --mixed-epochs 200
step bench_run 100 python3 benchmarks/bench_run.py --compare graph --repeats 1 device=cuda
step throughput 60 python3 benchmarks/bench_stacked.py --parts throughput --device cuda --sizes 1,24,64 \
  --epochs 20 --repeats 1
step profile 40 python3 -m cProfile -o "$out/startup.prof" train.py epochs=1 monitor=none device=cuda \
  hydra.run.dir=/tmp/profile
step lightning 60 python3 train.py engine=lightning device=cuda epochs=50 hydra.run.dir=/tmp/lightning
if (( ${#skipped[@]} )); then
  echo "== not run: ${skipped[*]}; next call: bash benchmarks/gpu_checks.sh \"${skipped[*]}\""
fi
