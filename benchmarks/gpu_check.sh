#!/usr/bin/env bash
# One-shot check on a lent GPU machine (Python 3.12 with torch and jax, no keras, no network).
# Prepare here: `bash ../shared/tools/gpu-wheels.sh` plus nox's wheels into .whl/, then run
# this from the repository root there with .whl carried. Logs go to $OUT (or /tmp/gpu-out).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, jax, keras; print('torch', torch.__version__, torch.cuda.is_available(), 'jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$?"; tail -n 25 "$OUT/$name.log"; }
step tests_torch "${T_TESTS:-170}" python3 -m nox --no-venv -s "gpu(backend='torch')" -- -q -x
step tests_jax "${T_TESTS:-170}" python3 -m nox --no-venv -s "gpu(backend='jax')" -- -q -x
step bench_torch "${T_BENCH:-100}" env KERAS_BACKEND=torch python3 benchmarks/rnn_bench.py \
  --cells lstm,gru --shapes A,B --rounds 5 --steps 5 --variants "fused=False,fused=False;hoist_inputs=False"
step bench_jax "${T_BENCH:-100}" env KERAS_BACKEND=jax python3 benchmarks/rnn_bench.py \
  --cells lstm,gru --shapes A,B --rounds 5 --steps 5 --variants "hoist_inputs=False"
