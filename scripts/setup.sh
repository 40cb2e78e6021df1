#!/usr/bin/env bash
# Create .venv with the right PyTorch for this machine, then Paintbridge and its test tools.
#   PAINTBRIDGE_TORCH        pip requirement for torch (default: torch==2.13.0)
#   PAINTBRIDGE_TORCH_INDEX  extra pip index for torch builds (e.g. PyTorch's CPU-only or a CUDA wheel index)
#   PAINTBRIDGE_RAY=1        also the worker pool's extra (Ray Serve: README "Many GPUs"; CI sets it for its tests)
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
# CLIP's BPE table, from which the engine builds the tokenizers single-file SD/SDXL checkpoints lack (offline, at
# load time): copied out of the open-clip-torch wheel, without its dependencies (it would pull torchvision).
BPE=engine/configs/tokenizers/bpe_simple_vocab_16e6.txt.gz
if [ ! -s "$BPE" ]; then
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --only-binary=:all: 'open-clip-torch>=2.20,<4' -d "$tmp"
  .venv/bin/python - "$tmp" "$BPE" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "open_clip_torch-*.whl"))[0]
data = zipfile.ZipFile(wheel).read("open_clip/bpe_simple_vocab_16e6.txt.gz")
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with open(sys.argv[2] + ".part", "wb") as f:
    f.write(data)
os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
  rm -rf "$tmp"
fi
.venv/bin/pip install -q -e '.[dev]'
if [ "${PAINTBRIDGE_RAY:-0}" = 1 ]; then
  .venv/bin/pip install -q -e '.[dev,ray]'
fi
.venv/bin/python -c 'from engine.models.tokenizers import clip_merges; assert len(clip_merges()) == 48894'
# Upscalers (spandrel): --no-deps, because its torchvision requirement would make pip replace our torch build;
# Paintbridge works without torchvision (see engine/models/upscale.py). Its other needs (einops, ...) are ours.
.venv/bin/pip install -q --no-deps 'spandrel>=0.4,<0.5'
.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'
echo "ready: .venv/bin/paintbridge serve"
