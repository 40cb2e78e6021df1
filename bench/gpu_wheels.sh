#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels bench/gpu.sh needs on an offline GPU machine whose Python
# already has torch, transformers, aiohttp, msgpack, numpy and pillow: into ./.whl (keep it git-ignored, e.g.
# `echo /.whl/ >> .git/info/exclude`). PYVER: the GPU machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl diffusers==0.42.1 importlib-metadata websockets sqlite-utils sqlite-fts4 click-default-group \
  pydantic pydantic-core annotated-types typing-inspection platformdirs
ls .whl
