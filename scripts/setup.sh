#!/usr/bin/env bash
# Create .venv with the right PyTorch for this machine, then Paintbridge and its test tools.
#   PAINTBRIDGE_TORCH        pip requirement for torch (default: torch==2.13.0)
#   PAINTBRIDGE_TORCH_INDEX  extra pip index for torch builds (e.g. PyTorch's CPU-only or a CUDA wheel index)
# On a machine without an NVIDIA GPU, point PAINTBRIDGE_TORCH_INDEX at PyTorch's CPU-only wheel index, or plain
# PyPI gives you a multi-GB CUDA build you cannot use. (Machines that already hold the CPU wheel locally, like
# our CI, need nothing.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Paintbridge needs Python 3.11+"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
TORCH=${PAINTBRIDGE_TORCH:-torch==2.13.0}
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  if [ -n "${PAINTBRIDGE_TORCH_INDEX:-}" ]; then
    .venv/bin/pip install -q "$TORCH" --extra-index-url "$PAINTBRIDGE_TORCH_INDEX"
  else
    .venv/bin/pip install -q "$TORCH"
  fi
fi
.venv/bin/pip install -q -e '.[dev]'
# Upscalers (spandrel): --no-deps, because its torchvision requirement would make pip replace our torch build;
# Paintbridge works without torchvision (see engine/models/upscale.py). Its other needs (einops, ...) are ours.
.venv/bin/pip install -q --no-deps 'spandrel>=0.4,<0.5'
.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'
echo "ready: .venv/bin/paintbridge serve"
