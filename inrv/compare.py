"""Look before you trust: the figures of ``inrv compare A B``.

    from inrv.compare import compare, load_any
    d = compare(load_any("scan.nii.gz"), load_any("scan.inrv"))   # .inrv files are decoded in memory
    d["psnr"], d["ssim"], d["max_abs_err"], d["percentiles"]["99"]

Both volumes are compared in *physical* units (stored value x slope + intercept: Hounsfield units for a CT),
voxel by voxel on the same grid. PSNR takes its peak from A's data range (A is the reference), as every
figure inrv prints (``inrv.codec.metrics``); SSIM is 3D. No torch here unless an ``.inrv`` file is decoded.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .errors import InputError
from .formats.volume import Volume

SCHEMA = "inrv-compare/1"
#: percentiles of |A - B| reported by :func:`compare`
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def load_any(path: str | os.PathLike, *, device: str | None = None, series: str | int | None = None) -> Volume:
    """A volume from any file inrv reads; an ``.inrv`` file is decoded (original dtype, geometry, units).
    ``series``: which series of a DICOM folder holding several (as ``inrv encode --series``)."""
    from . import load, restore
    from .formats.container import is_inrv

    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except IsADirectoryError:
        head = b""
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    if head and is_inrv(head):
        return restore(path, device=device)
    return load(path, series=series)


def physical(volume: Volume) -> np.ndarray:
    """The voxels in physical units (``stored * slope + intercept``) as float64."""
    it = volume.intensity
    data = np.asarray(volume.data, dtype=np.float64)
    if it is not None and (it.slope != 1.0 or it.intercept != 0.0):
        data = data * float(it.slope) + float(it.intercept)
    return data


def is_ct(volume: Volume) -> bool:
    """True for a CT: Hounsfield units, or a DICOM source whose Modality is CT."""
    it = volume.intensity
    if it is not None and (it.units or "").upper() == "HU":
        return True
    tags = ((volume.source or {}).get("dicom") or {}).get("tags") or {}
    return str(tags.get("0008|0060", "")).strip().upper() == "CT"


def compare(a: Volume, b: Volume) -> dict[str, Any]:
    """PSNR, SSIM, max error, mean/RMS error and percentiles of |A - B|, A being the reference.

    Raises :class:`~inrv.errors.InputError` when the two volumes are not on the same voxel grid.
    """
    from .codec.metrics import data_range, psnr, ssim3d

    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"the volumes have different shapes {tuple(a.shape)} and {tuple(b.shape)}: "
                         "compare needs the same voxel grid (decode with --shape to resample)")
    ref, test = physical(a), physical(b)
    err = np.abs(ref - test)
    rng = data_range(ref)
    same_geometry = (np.allclose(a.geometry.spacing, b.geometry.spacing, rtol=1e-4, atol=1e-5)
                     and np.allclose(a.geometry.origin, b.geometry.origin, rtol=1e-4, atol=1e-3)
                     and np.allclose(a.geometry.direction, b.geometry.direction, atol=1e-4))
    pct = np.percentile(err, PERCENTILES) if err.size else np.zeros(len(PERCENTILES))
    return {
        "schema": SCHEMA,
        "shape": list(a.shape),
        "units": a.intensity.units if a.intensity is not None else None,
        "data_range": rng,
        "psnr": psnr(ref, test, rng),
        "ssim": ssim3d(ref, test, rng),
        "max_abs_err": float(err.max()) if err.size else 0.0,
        "mean_abs_err": float(err.mean()) if err.size else 0.0,
        "rmse": float(math.sqrt(float(np.mean(err * err)))) if err.size else 0.0,
        "percentiles": {_pct_key(p): float(v) for p, v in zip(PERCENTILES, pct)},
        "identical": bool(np.array_equal(ref, test)),
        "same_geometry": bool(same_geometry),
        "dtypes": [a.data.dtype.name, b.data.dtype.name],
    }


def _pct_key(p: float) -> str:
    return f"{p:g}"


def format_compare_text(d: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """The human-readable block ``inrv compare`` prints."""
    p = d["percentiles"]
    psnr = "inf (identical)" if math.isinf(d["psnr"]) and d["psnr"] > 0 else f"{d['psnr']:.2f} dB"
    lines = [
        f"A (reference): {names[0]}",
        f"B:             {names[1]}",
        f"shape {' x '.join(str(s) for s in d['shape'])}   dtypes {d['dtypes'][0]} / {d['dtypes'][1]}   "
        + (f"units {d['units']}   " if d.get("units") else "") + f"data range of A {d['data_range']:g}",
        f"PSNR  {psnr}   SSIM {d['ssim']:.4f}",
        f"|A-B| max {d['max_abs_err']:g}   mean {d['mean_abs_err']:.4g}   RMS {d['rmse']:.4g}",
        "|A-B| percentiles  " + "   ".join(f"p{k} {v:.4g}" for k, v in p.items()),
    ]
    if not d["same_geometry"]:
        lines.append("note: the volumes' spacing, origin or direction differ (compared voxel by voxel)")
    return "\n".join(lines)


__all__ = ["compare", "load_any", "physical", "is_ct", "format_compare_text", "PERCENTILES", "SCHEMA"]
