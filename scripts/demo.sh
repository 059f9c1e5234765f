#!/usr/bin/env bash
# Set up everything, then compress and decompress the bundled sample (a 64^3 MNI T1 crop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
mkdir -p out
PRESET="${INRV_DEMO_PRESET:-fast}"
inrv encode samples/mni_patch64.nii.gz -o out/mni_patch64.inrv --preset "$PRESET" -f
inrv info out/mni_patch64.inrv
inrv decode out/mni_patch64.inrv -o out/mni_patch64.decoded.nii.gz -f
echo "decoded volume: out/mni_patch64.decoded.nii.gz" >&2
