#!/usr/bin/env bash
# The GPU checks behind the README's GPU figures, in one call of a lent GPU machine (15 device minutes
# a session, its start included). From the project root, after ../shared/gpu/prepare.sh built .gpu/:
#   run (carry [".gpu"]):  bash .gpu/run.sh 'bash benchmarks/gpu_checks.sh [steps]'
# Steps (all by default, in this order: the unmeasured targets before the figures that exist):
#   smoke tests study search bench_run throughput. Logs go to $OUT (or gpu-results/).
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
steps=${1:-"smoke tests study search bench_run throughput"}
step() {
  local name=$1 limit=$2; shift 2
  [[ " $steps " == *" $name "* ]] || return 0
  local started=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name: rc=$? in $((SECONDS - started)) s (limit $limit s)"
  tail -n 22 "$out/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
hreg-mnist  # verifies the store and builds the normalised cache, so that no timed run pays for it
step smoke 60 python3 train.py -m hydra/launcher=stacked seed=0,1,2 epochs=30 device=cuda hydra.sweep.dir=/tmp/smoke
step tests 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_graph.py
step study 110 python3 benchmarks/bench_stacked.py --parts study --device cuda --study-epochs 1000 --repeats 1 \
  --launchers stacked
step search 200 python3 benchmarks/bench_stacked.py --parts search --device cuda --search-trials 40 \
  --search-epochs 1000 --search-jobs 20
step bench_run 170 python3 benchmarks/bench_run.py --compare graph --repeats 2 device=cuda
step throughput 70 python3 benchmarks/bench_stacked.py --parts throughput --device cuda --sizes 1,24,64 \
  --epochs 20 --repeats 1
