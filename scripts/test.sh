#!/usr/bin/env bash
# Set up everything, then run the test suite (CPU only; a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec pytest -q "$@"
