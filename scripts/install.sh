#!/usr/bin/env bash
# Set up a virtual environment in .venv with inrv (editable) and its test/benchmark extras.
# Idempotent: a second run only re-checks. Honours:
#   PYTHON       the interpreter to build the venv from (default: python3)
#   TORCH_SPEC   the torch requirement installed first, as pip resolves it (e.g. "torch" for pip's default
#                build, a CUDA one on Linux; CI sets TORCH_SPEC=torch==2.13.0, a CPU wheel). Unset: on Linux
#                without an NVIDIA GPU, the CPU build from PyTorch's CPU index (TORCH_CPU_INDEX); else "torch".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true

has_nvidia_gpu() {
  [ -e /proc/driver/nvidia/version ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
}

if ! python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    echo "installing $TORCH_SPEC ..." >&2
    python -m pip install -q "$TORCH_SPEC"
  elif [ "$(uname -s)" = Linux ] && ! has_nvidia_gpu; then
    index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
    echo "no NVIDIA GPU: installing the CPU build of torch from $index (TORCH_SPEC=torch bash $0 for pip's CUDA build)" >&2
    if ! python -m pip install -q --timeout 30 --retries 1 torch --index-url "$index"; then
      echo "$index unreachable: installing torch as pip resolves it (on Linux a CUDA build of several GB)" >&2
      python -m pip install -q torch
    fi
  else
    echo "installing torch (pip's default build for this machine; on Linux with an NVIDIA GPU a CUDA build of several GB) ..." >&2
    python -m pip install -q torch
  fi
fi
python -m pip install -q -e ".[test,bench]"
python -c "import inrv, torch; print(f'inrv {inrv.__version__} with torch {torch.__version__}')" >&2
