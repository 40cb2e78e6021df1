#!/usr/bin/env bash
# GPU benchmark (one prepared run, < 8 minutes): full-size SD1.5 (512 px) and SDXL (1024 px) architectures with
# random weights built locally, fp16, 20 steps: it/s through the Paintbridge daemon vs bare diffusers.
#
#   bash bench/gpu.sh [--arch sd15,sdxl] [--steps 20] [--reps 2] [--pool N]
#
# --pool N: then the worker pool (bench/pool.py) with N GPU workers (Ray Serve, one GPU each) on the first arch:
# per-job dispatch overhead vs in process, N jobs at once (N GPUs: about one job's time), memory. Needs Ray
# (installed here like the other dependencies when missing).
#
# PYTHON: the interpreter with a CUDA build of torch (default: python3; .venv/bin/python if it has CUDA).
# Missing pure-Python dependencies are installed from ./.whl (wheels made by bench/gpu_wheels.sh, offline) when
# that folder exists, else from PyPI. Torch itself is never installed or upgraded here.
# PB_GPU_TIMEOUT: seconds before the run is stopped cleanly (default 450).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: $PY has no CUDA-enabled torch (or no GPU is visible); nothing to do" >&2
  exit 2
fi
"$PY" -c 'import torch; print("gpu.sh:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

# module name → pip requirement
declare -A REQ=([diffusers]="diffusers>=0.31" [transformers]="transformers>=4.44" [safetensors]="safetensors>=0.4"
                [aiohttp]="aiohttp>=3.10" [msgpack]="msgpack>=1.0" [websockets]="websockets>=13"
                [sqlite_utils]="sqlite-utils>=3.37" [pydantic]="pydantic>=2.7" [PIL]="pillow>=10"
                [numpy]="numpy>=1.26" [platformdirs]="platformdirs>=4")
case " $* " in *" --pool "*) REQ[ray]="ray[serve]>=2.60,<2.61" ;; esac
missing=()
for mod in "${!REQ[@]}"; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("${REQ[$mod]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu.sh: installing ${missing[*]}"
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pb-site .whl/*.whl || exit 3
    export PYTHONPATH="$PYTHONPATH:/tmp/pb-site"
  else
    "$PY" -m pip install -q "${missing[@]}" || { echo "gpu.sh: pip install failed" >&2; exit 3; }
  fi
fi

timeout --signal=TERM --kill-after=20 "${PB_GPU_TIMEOUT:-450}" "$PY" -m bench.gpu "$@"
rc=$?
[ $rc -eq 124 ] && echo "gpu.sh: stopped after ${PB_GPU_TIMEOUT:-450}s" >&2
exit $rc
