"""Pictures of a result: the three orthogonal mid-slices of A, B and |A - B| in one PNG.

    from inrv.compare import compare, load_any
    from inrv.preview import save_preview
    a, b = load_any("scan.nii.gz"), load_any("scan.inrv")
    save_preview(a, b, "check.png", figures=compare(a, b), names=("scan.nii.gz", "scan.inrv"))

Rows: A, B (the same grey window, so they can be compared by eye) and |A - B| (its own colour map, from 0 to
the 99.9th percentile of the error, so that a few outliers do not turn it black; the title gives the maximum).
The window follows the modality: a CT (Hounsfield units) gets the soft-tissue window (level 40 HU, width
400 HU), anything else A's 0.5-99.5th percentiles. Voxels are drawn with their physical aspect ratio.

Needs matplotlib (``pip install "inrv[plot]"``); it is drawn off screen (no display needed).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .compare import is_ct, physical
from .errors import UsageError
from .formats.volume import Volume

#: the CT window: (level, width) in HU (soft tissue)
CT_WINDOW = (40.0, 400.0)
#: the percentiles of A that bound the grey window of anything that is not a CT
PERCENTILE_WINDOW = (0.5, 99.5)


def display_window(volume: Volume, data: np.ndarray | None = None,
                   window: str | tuple[float, float] = "auto") -> tuple[float, float, str]:
    """``(low, high, label)`` of the grey window for ``volume`` (values in physical units).

    ``window``: ``"auto"`` (CT window for a CT, else percentiles), ``"ct"``, ``"percentile"``, or ``(low, high)``.
    """
    if isinstance(window, (tuple, list)):
        lo, hi = float(window[0]), float(window[1])
        return lo, hi, f"window {lo:g} .. {hi:g}"
    if window not in ("auto", "ct", "percentile"):
        raise UsageError(f"unknown window {window!r}: auto, ct, percentile or LOW,HIGH")
    if window == "ct" or (window == "auto" and is_ct(volume)):
        level, width = CT_WINDOW
        return level - width / 2, level + width / 2, f"CT window L{level:g} W{width:g} HU"
    data = physical(volume) if data is None else data
    lo, hi = (float(v) for v in np.percentile(data, PERCENTILE_WINDOW)) if data.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = float(data.min()), float(data.max())
        hi = hi if hi > lo else lo + 1.0
    return lo, hi, f"window p{PERCENTILE_WINDOW[0]:g}-p{PERCENTILE_WINDOW[1]:g} of A ({lo:.4g} .. {hi:.4g})"


def _mid_slices(data: np.ndarray, spacing: tuple[float, ...]) -> list[tuple[str, np.ndarray, float]]:
    """(label, 2D image with rows = the later axis, aspect) for the mid-slice across each array axis."""
    out = []
    names = "ijk"
    for axis in range(3):
        idx = data.shape[axis] // 2
        img = np.take(data, idx, axis=axis)           # the two other axes, in order (u, v)
        u, v = [a for a in range(3) if a != axis]
        aspect = float(spacing[v]) / float(spacing[u]) if spacing[u] else 1.0
        out.append((f"{names[axis]} = {idx}", img.T, aspect))   # rows = v, columns = u
    return out


def save_preview(a: Volume, b: Volume, path: str | os.PathLike, *, figures: dict[str, Any] | None = None,
                 names: tuple[str, str] = ("A", "B"), window: str | tuple[float, float] = "auto",
                 dpi: int = 110, force: bool = False) -> None:
    """Write a PNG of the mid-slices of A, B and |A - B| (see the module docstring); an existing ``path``
    is replaced only with ``force``."""
    from .formats.atomic import check_writable

    check_writable(path, force)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError('pictures need matplotlib: pip install "inrv[plot]"') from None
    if tuple(a.shape) != tuple(b.shape):
        raise UsageError(f"the volumes have different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    ref, test = physical(a), physical(b)
    err = np.abs(ref - test)
    lo, hi, wlabel = display_window(a, ref, window)
    emax = float(np.percentile(err, 99.9)) if err.size else 0.0
    emax = emax if emax > 0 else (float(err.max()) or 1.0)

    fig = Figure(figsize=(11, 10.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3)
    rows = [(f"A: {names[0]}", ref, "gray", lo, hi), (f"B: {names[1]}", test, "gray", lo, hi),
            ("|A - B|", err, "magma", 0.0, emax)]
    spacing = tuple(a.geometry.spacing)
    images = []
    for r, (title, data, cmap, vmin, vmax) in enumerate(rows):
        for c, (label, img, aspect) in enumerate(_mid_slices(data, spacing)):
            ax = axes[r][c]
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}\n{label}" if c == 0 else label, fontsize=9, loc="left" if c == 0 else "center")
        images.append(im)
    units = (a.intensity.units if a.intensity is not None else None) or "value"
    fig.colorbar(images[1], ax=[axes[0][2], axes[1][2]], shrink=0.9, label=f"{units} ({wlabel})")
    fig.colorbar(images[2], ax=axes[2][2], shrink=0.9, extend="max",
                 label=f"|A - B| in {units} (0 .. p99.9 = {emax:.3g})")
    if figures:
        psnr = figures.get("psnr")
        head = (f"PSNR {psnr:.2f} dB" if isinstance(psnr, float) and np.isfinite(psnr) else "identical"
                if figures.get("identical") else f"PSNR {psnr}")
        fig.suptitle(f"{head}   SSIM {figures.get('ssim', float('nan')):.4f}   "
                     f"max |A - B| {figures.get('max_abs_err', float('nan')):.4g}   "
                     f"p99 {figures.get('percentiles', {}).get('99', float('nan')):.4g}", fontsize=11)
    from .formats.atomic import atomic_output

    with atomic_output(path, force=force) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


__all__ = ["save_preview", "display_window", "CT_WINDOW", "PERCENTILE_WINDOW"]
