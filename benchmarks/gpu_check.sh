#!/usr/bin/env bash
# The GPU check in one lease: the whole test suite on torch and on JAX (the `gpu` nox
# sessions, both at once, each over several pytest-xdist workers), then the benchmark
# (one backend at a time, nothing else on the GPU). Made for a GPU machine without network
# access whose Python has torch and jax (and pytest, pytest-xdist, matplotlib, ...) but
# not keras or nox.
#
# Prepare here, in the repository root: `bash ../shared/tools/gpu-wheels.sh` (keras, its
# needs, nox and pytest into .whl/), then the pytest-xdist that goes with that pytest:
#   python3 -m pip download -q --no-deps --only-binary=:all: -d .whl pytest-xdist execnet
# (the image has a pytest-xdist of its own, made for the image's pytest, which the carried
# pytest replaces). Then run there from the repository root with .whl carried:
# `bash benchmarks/gpu_check.sh`. Everything lands in $OUT (default /tmp/gpu-out):
#   tests_{torch,jax}.log     the two nox sessions' output
#   report_{torch,jax}.json   float32 deviations measured by tests/test_gpu.py
#   bench_{torch,jax}.log     the benchmark's tables (ratios of medians, same process)
#   bench_{torch,jax}.json    every timing
# Knobs (environment): STEPS="tests bench" (either or both), PART=K/N (a part of the suite
# per lease, e.g. 1/2 then 2/2), WORKERS_TORCH and WORKERS_JAX (xdist workers, default 5
# and 10: the JAX suite is the longer one, mostly compilation on the CPU's cores),
# T_TESTS, T_BENCH_TORCH, T_BENCH_JAX (seconds). The defaults fit a 10-minute command.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
STEPS=${STEPS:-"tests bench"}; T_TESTS=${T_TESTS:-300}
declare -A WORKERS=([torch]=${WORKERS_TORCH:-5} [jax]=${WORKERS_JAX:-10})
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
KERAS_BACKEND=jax python3 -c "import torch, jax, keras; print('torch', torch.__version__, torch.cuda.is_available(), torch.backends.cudnn.version(), '| jax', jax.__version__, jax.devices(), '| keras', keras.__version__)"
python3 -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('pytest', 'pytest-xdist', 'nox', 'numpy')), sep=' | ')"
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s]"; }

if [[ " $STEPS " == *" tests "* ]]; then
  has_xdist=0; python3 -c "import xdist" 2>/dev/null && has_xdist=1
  part=(); [ -n "${PART:-}" ] && part=(--part "$PART")
  # Tests not started 40 s before the limit are skipped ("out of time"), so each run
  # ends with its summary; `timeout` is only the last resort.
  export KERASRNN_TEST_DEADLINE=$(( $(date +%s) + T_TESTS - 40 ))
  for backend in torch jax; do
    xdist=(); [ "$has_xdist" = 1 ] && xdist=(-n "${WORKERS[$backend]}")
    mkdir -p "/tmp/report_$backend"
    KERASRNN_GPU_REPORT="/tmp/report_$backend/report.json" timeout "$T_TESTS" \
      python3 -m nox --no-venv -s "gpu(backend='$backend')" -- -p no:cacheprovider -rfEs \
      "${xdist[@]}" "${part[@]}" > "$OUT/tests_$backend.log" 2>&1 &
  done
  wait
  unset KERASRNN_TEST_DEADLINE
  for backend in torch jax; do
    echo "== tests $backend $(elapsed)"
    grep -E "^(FAILED|ERROR) " "$OUT/tests_$backend.log" | cut -c1-200 | head -n 40
    grep -E "KERASRNN_REQUIRE_GPU|Session gpu" "$OUT/tests_$backend.log" | cut -c1-200
    grep -E "tests out of time|[0-9]+ (passed|failed|skipped|errors?)[ ,].* in [0-9.]+s" "$OUT/tests_$backend.log" | tail -n 2
    python3 - "$backend" "$OUT/report_$backend.json" <<'EOF'
import glob, json, sys
merged = {}
for path in glob.glob(f"/tmp/report_{sys.argv[1]}/*.json"):
    for name, values in json.load(open(path))["measured"].items():
        merged.setdefault(name, {}).update(values)
json.dump({"backend": sys.argv[1], "measured": merged}, open(sys.argv[2], "w"), indent=1, sort_keys=True)
print(json.dumps(merged, sort_keys=True))
EOF
  done
fi

if [[ " $STEPS " == *" bench "* ]]; then
  bench() {  # backend, seconds, then the benchmark's arguments
    local backend=$1 limit=$2; shift 2
    echo "== bench $backend $* $(elapsed)"
    env KERAS_BACKEND="$backend" timeout "$limit" python3 benchmarks/rnn_bench.py \
      --rounds 7 --steps 5 "$@" 2>&1 | grep -v -e "^W0" -e "^I0" | tee -a "$OUT/bench_$backend.log"
  }
  # torch: kerasrnn (cuDNN), keras.layers, torch.nn, kerasrnn in torch.nn's loop; and the keras.ops loop.
  bench torch "${T_BENCH_TORCH:-90}" --cells lstm,gru,simple_rnn --shapes GPU,A --variants "fused=False" --json "$OUT/bench_torch.json"
  # JAX: the cuDNN LSTM against the loop, and the loop's hoisting and remat choices.
  bench jax "${T_BENCH_JAX:-150}" --cells lstm,gru,simple_rnn --shapes GPU,A --variants "fused=False,remat=True,hoist_inputs=False" \
    --json "$OUT/bench_jax.json"
fi
echo "done $(elapsed)"
