"""Write the golden ``.inrv`` files that the test suite decodes forever (not a test; run by hand).

    python tests/golden/make_golden.py            # writes tests/golden/v1/ (refuses to overwrite)
    python tests/golden/make_golden.py --force    # regenerate (only with a format major bump!)
    python tests/golden/make_golden.py --out DIR  # try it somewhere else
    python tests/golden/make_golden.py --add NAME PRESET [KEY=VALUE ...]
                                                  # add one file (a new model feature) to the set,
                                                  # leaving every existing file as it is

Uses only the public API: a tiny, deterministic 16^3 int16 CT-like phantom with an anisotropic,
oblique geometry is saved as NIfTI with ``inrv.save``, compressed with ``inrv.compress`` (preset
``tiny`` for the paper model, ``latent-tiny`` for the latent model when that preset exists) and
decoded once. Written next to the ``.inrv`` files:

* ``reference.npy``: the phantom as the encoder saw it (``inrv.load`` of the NIfTI file);
* ``<name>.decoded.npy``: what this machine decoded at generation time;
* ``golden.json``: per file the expected shape, dtype, geometry, PSNR against the reference with a
  tolerance band, the decoded array's SHA-256, and the versions that made it.

``tests/formats/test_golden.py`` checks every file listed there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "v1"

# PSNR(decoded now, reference) must lie within +-PSNR_BAND_DB of the value at generation time, and
# PSNR(decoded now, decoded at generation) must be at least SELF_PSNR_MIN_DB (same file, another
# machine / torch version / device: small float differences, never a different picture).
PSNR_BAND_DB = 0.5
SELF_PSNR_MIN_DB = 45.0


def phantom() -> tuple[np.ndarray, "object"]:
    """A 16^3 int16 CT-like phantom (air, tissue, a bone shell, a lesion, a gradient), no RNG."""
    from inrv import Geometry

    n = 16
    c = (np.arange(n) + 0.5) / n * 2 - 1
    x, y, z = np.meshgrid(c, c * 1.1, c * 0.9, indexing="ij")
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    v = np.full((n, n, n), -1000.0)
    v[r < 0.85] = 40.0
    v[(r > 0.6) & (r < 0.75)] = 900.0
    v[(x - 0.2) ** 2 + (y + 0.1) ** 2 + (z - 0.1) ** 2 < 0.25 ** 2] = 120.0
    v += 30.0 * x - 20.0 * z
    data = np.rint(v).astype(np.int16)
    a = math.radians(10.0)
    direction = (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)
    return data, Geometry((0.8, 0.9, 1.5), (-12.0, 7.5, 30.25), direction)


def _psnr(ref: np.ndarray, test: np.ndarray) -> float:
    from inrv.codec.metrics import psnr

    return float(psnr(ref, test))


def _entry(out: Path, src: Path, reference: np.ndarray, name: str, preset: str, overrides: dict) -> dict:
    """Compress ``src`` into ``out/<name>.inrv``, decode it once, return its golden.json entry."""
    import inrv

    dst = out / f"{name}.inrv"
    summary = inrv.compress(src, dst, preset, device="cpu", force=True, **overrides)
    f = inrv.read(dst)
    decoded = inrv.restore(dst, device="cpu").data
    np.save(out / f"{name}.decoded.npy", decoded)
    entry = {
        "file": dst.name,
        "decoded": f"{name}.decoded.npy",
        "preset": preset,
        "overrides": overrides,
        "model": f.encoded.model,
        "shape": list(f.shape),
        "dtype": f.intensity.dtype,
        "geometry": f.geometry.to_dict(),
        "file_bytes": dst.stat().st_size,
        "psnr_db": _psnr(reference, decoded),
        "psnr_band_db": PSNR_BAND_DB,
        "self_psnr_min_db": SELF_PSNR_MIN_DB,
        "decoded_sha256": hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest(),
        "encode_metrics": {k: summary.details["metrics"].get(k) for k in ("psnr", "ssim", "max_abs_err")},
    }
    print(f"{dst}: {entry['file_bytes']} bytes, PSNR {entry['psnr_db']:.2f} dB")
    return entry


def _made_with() -> dict:
    import torch

    import inrv

    return {"inrv": inrv.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "device": "cpu"}


def _value(text: str):
    """A KEY=VALUE override's value: JSON if it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="overwrite existing golden files")
    ap.add_argument("--add", nargs="+", metavar="ARG",
                    help="NAME PRESET [KEY=VALUE ...]: add one file to an existing set")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    import inrv

    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "golden.json"
    data, geometry = phantom()

    if args.add:
        if len(args.add) < 2 or not meta_path.exists():
            print("--add needs NAME PRESET [KEY=VALUE ...] and an existing golden set", file=sys.stderr)
            return 2
        name, preset = args.add[0], args.add[1]
        overrides = dict((kv.split("=", 1)[0], _value(kv.split("=", 1)[1])) for kv in args.add[2:])
        meta = json.loads(meta_path.read_text())
        if any(e["file"] == f"{name}.inrv" for e in meta["files"]) or (out / f"{name}.inrv").exists():
            print(f"{name}.inrv exists; golden files are forever", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "phantom16.nii.gz"
            inrv.save(inrv.Volume(data, geometry), src)
            reference = inrv.load(src).data
            if not np.array_equal(reference, np.load(out / meta["reference"])):
                print("the phantom no longer matches reference.npy", file=sys.stderr)
                return 2
            entry = _entry(out, src, reference, name, preset, overrides)
        entry["made_with"] = _made_with()
        meta["files"].append(entry)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        print(f"added {name} to {meta_path}")
        return 0

    if meta_path.exists() and not args.force:
        print(f"{meta_path} exists; golden files are forever (use --force only with a format major bump)",
              file=sys.stderr)
        return 2
    # (name, preset, config overrides); "paper-blocks" exercises the block partition (2x2x2 blocks of 8^3)
    jobs = [("paper-tiny", "tiny", {}), ("paper-blocks", "tiny", {"block": 8})]
    if "latent-tiny" in inrv.PRESETS:
        jobs.append(("latent-tiny", "latent-tiny", {}))

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "phantom16.nii.gz"
        inrv.save(inrv.Volume(data, geometry), src)
        reference = inrv.load(src).data
        np.save(out / "reference.npy", reference)
        entries = [_entry(out, src, reference, *job) for job in jobs]
    meta = {"format": "1.0", "reference": "reference.npy", "made_with": _made_with(), "files": entries}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
