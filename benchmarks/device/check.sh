#!/bin/bash
# The users' flows on a GPU machine, then the test suite there.
#   bash benchmarks/device/check.sh [all|flows|tests|slow] [SECONDS]
# all (default): the flows (~6 min on an H100), then the tests until SECONDS (default 535) from the start;
# flows: the flows alone; tests: the suite alone; slow: the slow tests alone (-m slow: 5 1/2 min on an H200 at
# 8 workers; on 2026-11-28 all passed there but two, mended since: docs/benchmarks.md, "Fourth lease"). Two
# calls on one warm machine (flows, then slow) fit a 15-minute lease.
# Needs .whl/site.tar.xz (benchmarks/device/pack_site.py) unless ray, optuna and wandb import already. Writes
# flows.txt, smi.txt, summary.csv, pick-test.json and tests.txt under $OUT (default /tmp/device-check).
# Measured in docs/benchmarks.md, "Third lease" and "Fourth lease".
part=${1:-all}
case $part in all | flows | tests | slow) ;; *) echo "part: all, flows, tests or slow, not '$part'" >&2; exit 2 ;; esac
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 WANDB_SILENT=true
t0=$(date +%s)
stamp() { echo "=== [$(($(date +%s) - t0)) s] $*"; }
if ! python3 -c "import ray, optuna, wandb" 2>/dev/null; then  # unpacked once per machine
  [ -d /tmp/site/ray ] || { mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site; } || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
if ! command -v tune-attn >/dev/null; then  # the package from this checkout, its command through python3 -m
  mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m tune_attn.cli "$@"\n' >/tmp/bin/tune-attn
  chmod +x /tmp/bin/tune-attn && export PATH=/tmp/bin:$PATH PYTHONPATH=${PYTHONPATH:-$PWD}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, ray, optuna, wandb; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'ray', ray.__version__, 'optuna', optuna.__version__, 'wandb', wandb.__version__, 'CPUs', __import__('os').cpu_count())"
W=$(mktemp -d)
[ "$part" = tests ] || [ "$part" = slow ] || {
  stamp "train on cuda (hflip, W&B offline), then resume it on the CPU"
  timeout 120 tune-attn train -c configs/default.yaml --set train.epochs=3 --set train.hflip=true \
    --set train.device=cuda --wandb offline --out "$W/run"; echo "rc=$?"
  timeout 90 tune-attn train --out "$W/run" --resume --set train.epochs=4 --set train.device=cpu; echo "rc=$?"
  stamp "evaluate on validation and test images, export, evaluate the bundle"
  timeout 60 tune-attn evaluate "$W/run"; echo "rc=$?"
  timeout 60 tune-attn evaluate "$W/run" --test; echo "rc=$?"
  timeout 90 tune-attn export "$W/run" --out "$W/bundle"; echo "rc=$?"
  timeout 60 tune-attn evaluate "$W/bundle" --test; echo "rc=$?"
  stamp "the main job's sweep, a quarter GPU per trial, 4 at once, W&B offline"
  (for i in $(seq 60); do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | tr '\n' ' '
    echo "| $(($(date +%s) - t0)) s"; sleep 2; done) >"$OUT/smi.txt" 2>&1 &
  timeout 200 tune-attn sweep search_spaces/default.yaml --num-samples 16 --max-concurrent 4 \
    --gpus-per-trial 0.25 --wandb offline --storage "$W/sweeps" --name g --time-budget 2m; echo "rc=$?"
  kill %1 2>/dev/null
  cp "$W/sweeps/g/summary.csv" "$OUT/" 2>/dev/null
  stamp "pick, export, test the pick"
  timeout 60 tune-attn best "$W/sweeps/g" --export "$W/pick"; echo "rc=$?"
  timeout 60 tune-attn evaluate "$W/pick" --test --json "$OUT/pick-test.json"; echo "rc=$?"
  stamp "a new sweep seeded with the last one's pick (--try SWEEP), 2 trials"
  timeout 120 tune-attn sweep search_spaces/default.yaml --num-samples 2 --max-concurrent 2 --gpus-per-trial 0.5 \
    --wandb off --storage "$W/sweeps" --name seeded --try "$W/sweeps/g"; echo "rc=$?"
  stamp "decoding in a trial's threads: 1 against 4 (pets stand-in, 224 px)"
  timeout 120 python3 benchmarks/decode_threads.py --per-class 20 --threads 4; echo "rc=$?"
  stamp "the offline W&B runs"
  timeout 60 python3 benchmarks/device/wandb_runs.py "$W"; echo "rc=$?"
} 2>&1 | tee "$OUT/flows.txt"
[ "$part" = flows ] && { stamp end; exit 0; }
left=$((${2:-535} - ($(date +%s) - t0)))
marks=()
[ "$part" = slow ] && marks=(-m slow)
stamp "tests, for at most $left s (moto, for the s3:// test, is not carried)"
# -v: each test's verdict as it comes, so a run cut off by the limit still names its failures
timeout "$left" python3 -m pytest -v -n 8 --dist loadgroup -p no:cacheprovider -p no:benchmark -rfE --tb=short "${marks[@]}" \
  --deselect tests/test_sweep.py::test_a_storage_uri_gets_every_trials_run_folder_and_the_summary \
  >"$OUT/tests.txt" 2>&1
echo "pytest rc=$?"
grep -E "FAILED|ERROR|passed|failed" "$OUT/tests.txt" | grep -v PASSED | tail -20
stamp end
