#!/usr/bin/env bash
# Set up a virtual environment in .venv with inrv (editable) and its test/benchmark extras.
# Idempotent: a second run only re-checks. Honours:
#   PYTHON       the interpreter to build the venv from (default: python3)
#   TORCH_SPEC   the torch requirement installed first (default: "torch", i.e. whatever pip picks for
#                this platform, a CUDA build on Linux). CI sets TORCH_SPEC=torch==2.13.0, a CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "installing ${TORCH_SPEC:-torch} ..." >&2
  python -m pip install -q "${TORCH_SPEC:-torch}"
fi
python -m pip install -q -e ".[test,bench]"
python -c "import inrv, torch; print(f'inrv {inrv.__version__} with torch {torch.__version__}')" >&2
