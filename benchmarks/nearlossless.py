#!/usr/bin/env python
"""Near-lossless and lossless benchmark (issue #16): inrv's ``nearlossless`` coder against the
error-bounded and lossless codecs a user could pick instead, at max error E in {0, 1, 2, 4, 8}.

    python benchmarks/nearlossless.py samples/mni_patch64.nii.gz --phantom        # a minute or two
    python benchmarks/nearlossless.py vol.nii.gz --errors 0,1,4 --out bench-nl

For each volume and E: inrv (``inrv.compress`` with ``--max-error E``: the real ``.inrv`` file, header
included, decoded again with ``inrv.decompress``), and the anchors of ``benchmarks/classical.py``:
quantise (bins 2E+1) + ``xz -9e`` / ``zstd -19``, SZ3 (ABS = E), SPERR (PWE = E), JPEG-LS (NEAR = E, 2D
slices), and at E = 0 also JPEG 2000 lossless and JPEG XL lossless (2D slices). Bits per voxel from the
real compressed bytes; the max error after rounding back to the original dtype is checked for every
point. ``--phantom`` adds a deterministic 16-bit CT-like phantom (160 x 160 x 96 int16, HU with noise).

Prints the machine, the date, the number of runs (1 per point) and one markdown table per volume
(``--out``: ``nearlossless.md`` and ``nearlossless.csv``). The target column is inrv's bpv divided by
the smallest anchor's at the same E (issue #16: <= 0.9 for E >= 1, <= 1 for E = 0).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classical  # noqa: E402

import inrv  # noqa: E402
from inrv.codec.metrics import psnr  # noqa: E402

BOUNDED = ("quant-xz", "quant-zstd", "sz3-bound", "sperr-pwe", "jpegls-near")
LOSSLESS_ONLY = ("jpeg2k-lossless", "jpegxl-lossless")


def ct_phantom(shape=(160, 160, 96), seed: int = 0) -> np.ndarray:
    """A 16-bit CT-like volume in HU: air, a body with fat, soft tissue, lungs with vessels, a spine and
    ribs, correlated noise (sigma ~ 12 HU). Deterministic (seeded)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = (np.arange(nx) + 0.5) / nx * 2 - 1
    y = (np.arange(ny) + 0.5) / ny * 2 - 1
    z = (np.arange(nz) + 0.5) / nz * 2 - 1
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    v = np.full(shape, -1000.0)
    body = (X / 0.85) ** 2 + (Y / 0.6) ** 2 < 1
    v[body] = -90.0                                                       # fat
    inner = (X / 0.78) ** 2 + (Y / 0.53) ** 2 < 1
    v[inner] = 45.0 + 10 * Z[inner]                                       # soft tissue
    for cx in (-0.38, 0.38):                                              # lungs
        lung = ((X - cx) / 0.3) ** 2 + ((Y + 0.05) / 0.38) ** 2 + (Z / 1.3) ** 2 < 1
        v[lung] = -850.0
    vessels = np.sin(9 * X + 3 * Z) * np.sin(11 * Y - 2 * Z) > 0.85
    v[vessels & (v < -500)] = 30.0
    spine = (X / 0.09) ** 2 + ((Y - 0.42) / 0.09) ** 2 < 1
    v[spine] = 700.0 + 150 * np.cos(6 * np.pi * Z[spine])
    ribs = (np.abs(((X / 0.8) ** 2 + (Y / 0.55) ** 2) - 0.92) < 0.04) & (np.cos(10 * np.pi * Z) > 0.3)
    v[ribs] = 900.0
    noise = rng.normal(0, 16.0, shape)
    noise = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1)) / np.sqrt(3) * 0.75   # correlated
    v = np.where(v > -990, v + noise, v + 0.3 * noise)
    return np.clip(np.rint(v), -1024, 3071).astype(np.int16)


def _load(path: str) -> tuple[str, np.ndarray]:
    vol = inrv.load(path)
    name = os.path.basename(path).split(".")[0]
    return name, np.ascontiguousarray(vol.data)


def _inrv_point(name: str, x: np.ndarray, E: int, tmp: str) -> dict:
    src = os.path.join(tmp, f"{name}.nii.gz")
    if not os.path.exists(src):
        inrv.save(inrv.Volume(data=x, geometry=inrv.Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                                                             (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                              intensity=inrv.Intensity(dtype=str(x.dtype), slope=1.0, intercept=0.0, units=None,
                                                       min=float(x.min()), max=float(x.max())),
                              source={"kind": "array"}), src)
    dst = os.path.join(tmp, f"{name}-{E}.inrv")
    out = os.path.join(tmp, f"{name}-{E}.nii")
    t0 = time.perf_counter()
    inrv.compress(src, dst, "lossless", max_error=float(E), force=True)
    te = time.perf_counter() - t0
    t0 = time.perf_counter()
    inrv.decompress(dst, out, force=True)
    td = time.perf_counter() - t0
    back = inrv.load(out).data
    return {"codec": "inrv", "E": E, "bytes": os.path.getsize(dst), "psnr": psnr(x, back),
            "max_err": int(np.max(np.abs(back.astype(np.int64) - x.astype(np.int64)))), "enc_s": te, "dec_s": td}


def _anchor_point(codec: str, x: np.ndarray, E: int) -> dict | None:
    if not classical.available(codec):
        return None
    try:
        r = classical.sweep(codec, x, [E if codec not in LOSSLESS_ONLY else classical.CODECS[codec].params[0]])[0]
    except classical.Unsupported:
        return None
    err = int(np.max(np.abs(r.decoded.astype(np.int64) - x.astype(np.int64))))
    return {"codec": codec, "E": E, "bytes": r.nbytes, "max_err": err, "enc_s": r.enc_s, "dec_s": r.dec_s,
            "psnr": psnr(x, r.decoded)}


def run(volumes: list[tuple[str, np.ndarray]], errors: list[int], quick: bool, reuse: list[dict] | None = None,
        with_inrv: bool = True) -> list[dict]:
    """All points; anchor points found in ``reuse`` (rows of an earlier CSV: same volume, codec, E) are
    taken from there instead of being measured again."""
    rows = []
    old = {(r["volume"], r["codec"], int(r["E"])): r for r in (reuse or []) if r["codec"] != "inrv"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, x in volumes:
            for E in errors:
                pts = [_inrv_point(name, x, E, tmp)] if with_inrv else []
                codecs = BOUNDED + (LOSSLESS_ONLY if E == 0 else ())
                if E == 0:
                    codecs = tuple(c for c in codecs if c not in ("sperr-pwe",))   # SPERR has no lossless mode
                for c in codecs:
                    if (name, c, E) in old:
                        r = old[(name, c, E)]
                        pts.append({"codec": c, "E": E, "bytes": int(r["bytes"]), "max_err": int(r["max_err"]),
                                    "enc_s": float(r["enc_s"]), "dec_s": float(r["dec_s"]), "psnr": float(r["psnr"])})
                        continue
                    p = _anchor_point(c, x, E)
                    if p is not None:
                        pts.append(p)
                for p in pts:
                    p.update(volume=name, voxels=int(x.size), bpv=8.0 * p["bytes"] / x.size,
                             within=p["max_err"] <= E)
                    rows.append(p)
                    print(f"{name:>14} E={E:<2} {p['codec']:>16} {p['bpv']:.4f} bpv  PSNR {p['psnr']:.2f} dB"
                          f"  max|err| {p['max_err']}"
                          f"  enc {p['enc_s']:.2f} s dec {p['dec_s']:.2f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = []
    for vol in dict.fromkeys(r["volume"] for r in rows):
        rs = [r for r in rows if r["volume"] == vol]
        codecs = list(dict.fromkeys(r["codec"] for r in rs if r["codec"] != "inrv"))
        out.append(f"\n### {vol} ({rs[0]['voxels']} voxels)\n")
        out.append("| E | inrv bpv | inrv PSNR dB | inrv max err | best anchor | its bpv | inrv / best | "
                   + " | ".join(codecs) + " |")
        out.append("|---" * (7 + len(codecs)) + "|")
        for E in dict.fromkeys(r["E"] for r in rs):
            me = next((r for r in rs if r["E"] == E and r["codec"] == "inrv"), None)
            if me is None:
                continue
            anchors = [r for r in rs if r["E"] == E and r["codec"] != "inrv" and r["within"]]
            best = min(anchors, key=lambda r: r["bytes"]) if anchors else None
            cells = []
            for c in codecs:
                r = next((r for r in rs if r["E"] == E and r["codec"] == c), None)
                cells.append("-" if r is None else f"{r['bpv']:.3f}" + ("" if r["within"] else " (bound broken)"))
            head = f"| {E} | **{me['bpv']:.3f}** | {me['psnr']:.2f} | {me['max_err']} | "
            out.append(head + (f"{best['codec']} | {best['bpv']:.3f} | {me['bytes'] / best['bytes']:.3f} | "
                               if best else "- | - | - | "))
            out[-1] += " | ".join(cells) + " |"
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("volumes", nargs="*", help="NIfTI/NRRD/MHA files or DICOM folders (integer voxels)")
    ap.add_argument("--phantom", action="store_true", help="add the 16-bit CT-like phantom")
    ap.add_argument("--errors", default="0,1,2,4,8", help="max errors E (stored units), comma-separated")
    ap.add_argument("--out", default=None, help="folder for nearlossless.md and nearlossless.csv")
    ap.add_argument("--reuse", default=None, metavar="CSV",
                    help="take the anchors' points from an earlier nearlossless.csv (measure only inrv again)")
    ap.add_argument("--no-inrv", action="store_true", help="measure the anchors only")
    args = ap.parse_args(argv)
    vols = [_load(p) for p in args.volumes]
    if args.phantom:
        vols.append(("ct_phantom16", ct_phantom()))
    if not vols:
        ap.error("give volumes and/or --phantom")
    errors = [int(e) for e in args.errors.split(",")]
    head = (f"inrv {inrv.__version__} nearlossless benchmark; {platform.platform()}, {platform.processor() or '?'}, "
            f"{os.cpu_count()} CPUs, python {platform.python_version()}, numpy {np.__version__}; "
            f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; 1 run per point; "
            "bpv from the real compressed bytes (inrv: the whole .inrv file)")
    print(head)
    reuse = list(csv.DictReader(open(args.reuse, encoding="utf-8"))) if args.reuse else None
    rows = run(vols, errors, quick=False, reuse=reuse, with_inrv=not args.no_inrv)
    md = head + "\n" + table(rows) + "\n"
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "nearlossless.md"), "w", encoding="utf-8") as f:
            f.write(md)
        with open(os.path.join(args.out, "nearlossless.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["volume", "codec", "E", "bytes", "voxels", "bpv", "psnr", "max_err", "within",
                                              "enc_s", "dec_s"])
            w.writeheader()
            for r in rows:
                w.writerow({k: r[k] for k in w.fieldnames})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
