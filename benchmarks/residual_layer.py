#!/usr/bin/env python
"""A latent layer under a bounded residual against the near-lossless coder alone (issue 16's design question).

    python benchmarks/residual_layer.py samples/mni_patch64.nii.gz --budget 90 --lambdas 2e-3,5e-4

For each lambda: a latent fit (preset ``balanced``, ``--budget`` seconds), its reconstruction rounded to the
stored integers, and the residual ``x - round(x_hat)`` coded by the near-lossless coder to each bound E (no
conditioning on ``x_hat``); printed: the latent bytes + the residual bytes in bits per voxel, against the
near-lossless coder alone at the same E (sections only, no container, for both). One run per point.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import inrv
    from inrv.codec.nearlossless import NearLosslessConfig, NearLosslessModel
    from inrv.formats.io import restore_dtype

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("volume")
    ap.add_argument("--budget", type=float, default=90.0, help="seconds per latent fit")
    ap.add_argument("--lambdas", default="2e-3,5e-4")
    ap.add_argument("--bounds", default="1,2,4,8")
    a = ap.parse_args(argv)
    vol = inrv.load(a.volume)
    if vol.data.dtype.kind not in "iu":
        ap.error("integer voxels only")
    x = vol.data.astype(np.int64)
    n = x.size
    bounds = [int(e) for e in a.bounds.split(",")]

    def nl_bytes(arr: np.ndarray, E: int) -> int:
        enc = NearLosslessModel().fit(arr, NearLosslessConfig(max_error=E))
        return sum(len(b) for b in enc.sections.values())

    print(f"# {a.volume}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, one run per point")
    alone = {E: nl_bytes(x, E) for E in bounds}
    print("| E | near-lossless alone (bpv) | " + " | ".join(f"latent lambda {lam} + residual" for lam in a.lambdas.split(","))
          + " |")
    rows = {E: [f"{8 * alone[E] / n:.3f}"] for E in bounds}
    for lam in [float(v) for v in a.lambdas.split(",")]:
        t = time.perf_counter()
        enc = inrv.encode(vol, "balanced", lmbda=lam, time_budget=a.budget)
        nb = sum(len(b) for b in enc.sections.values())
        r = x - np.rint(restore_dtype(enc.reconstruction, vol.intensity)).astype(np.int64)
        print(f"# lambda {lam}: latent {8 * nb / n:.3f} bpv, largest residual {int(np.abs(r).max())}, "
              f"{time.perf_counter() - t:.0f} s")
        for E in bounds:
            tot = nb + nl_bytes(r, E)
            rows[E].append(f"{8 * tot / n:.3f} ({tot / alone[E]:.2f}x)")
    for E in bounds:
        print(f"| {E} | " + " | ".join(rows[E]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
