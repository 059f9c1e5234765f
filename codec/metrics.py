"""Quality and rate metrics, in one place (numpy only; no torch).

* PSNR: peak = data range of the *original* (max - min), MSE over the whole volume.
* SSIM: 3D SSIM (7x7x7 uniform window, scikit-image's implementation), same data range.
* bits per voxel: 8 * real bytes / voxels.
* the paper's CR = 1 - params / voxels (reported for comparison with its tables only).
"""

from __future__ import annotations

import math

import numpy as np


def data_range(ref: np.ndarray) -> float:
    ref = np.asarray(ref)
    return float(ref.max()) - float(ref.min()) if ref.size else 0.0


def mse(ref: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {test.shape}")
    return float(np.mean((ref - test) ** 2))


def psnr(ref: np.ndarray, test: np.ndarray, data_range_: float | None = None) -> float:
    """PSNR in dB with peak = ``data_range_`` (default: max - min of ``ref``). inf when equal."""
    rng = data_range(ref) if data_range_ is None else float(data_range_)
    err = mse(ref, test)
    if err == 0.0:
        return math.inf
    if rng == 0.0:
        return -math.inf if err > 0 else math.inf
    return 10.0 * math.log10(rng * rng / err)


def ssim3d(ref: np.ndarray, test: np.ndarray, data_range_: float | None = None) -> float:
    """Mean 3D SSIM (uniform 7^3 window, smaller when an axis is shorter than 7 voxels).

    When an axis is thinner than 3 voxels, the mean 2D SSIM of the slices along it; NaN when
    the volume is too small for any window.
    """
    from skimage.metrics import structural_similarity

    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    rng = data_range(ref) if data_range_ is None else float(data_range_)
    if rng == 0.0:
        return 1.0 if np.array_equal(ref, test) else 0.0
    win = _odd_window(ref.shape)
    if win >= 3:
        return float(structural_similarity(ref, test, data_range=rng, win_size=win))
    ax = int(np.argmin(ref.shape))
    slices = [(np.take(ref, i, axis=ax), np.take(test, i, axis=ax)) for i in range(ref.shape[ax])]
    win = _odd_window(slices[0][0].shape)
    if win < 3:
        return math.nan
    return float(np.mean([structural_similarity(a, b, data_range=rng, win_size=win) for a, b in slices]))


def _odd_window(shape: tuple[int, ...]) -> int:
    win = min(7, *shape)
    return win if win % 2 else win - 1


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(ref, np.float64) - np.asarray(test, np.float64)))) if np.size(ref) else 0.0


def bits_per_voxel(nbytes: int, nvoxels: int) -> float:
    return 8.0 * nbytes / nvoxels


def paper_cr(params: int, nvoxels: int) -> float:
    """The paper's compression rate CR = 1 - params / voxels (a fraction; x100 for %)."""
    return 1.0 - params / nvoxels


def quality(ref: np.ndarray, test: np.ndarray, *, with_ssim: bool = True) -> dict[str, float]:
    """PSNR, SSIM and max abs error of ``test`` against ``ref``, with ref's data range."""
    rng = data_range(ref)
    out = {"psnr": psnr(ref, test, rng), "max_abs_err": max_abs_error(ref, test), "data_range": rng}
    if with_ssim:
        out["ssim"] = ssim3d(ref, test, rng)
    return out


def foreground_mask(ref: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Foreground voxels: ``ref > threshold`` (default: ``ref > ref.min()``, i.e. all but the background
    floor, which is the air/padding value in MRI and CT volumes)."""
    ref = np.asarray(ref)
    thr = float(ref.min()) if threshold is None else float(threshold)
    return ref > thr


def psnr_foreground(ref: np.ndarray, test: np.ndarray, data_range_: float | None = None,
                    threshold: float | None = None) -> float:
    """PSNR over the foreground voxels of ``ref`` only (see :func:`foreground_mask`); the peak is still the
    data range of the whole ``ref``. NaN when there is no foreground voxel."""
    ref = np.asarray(ref)
    test = np.asarray(test)
    if ref.shape != test.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {test.shape}")
    mask = foreground_mask(ref, threshold)
    if not mask.any():
        return math.nan
    rng = data_range(ref) if data_range_ is None else float(data_range_)
    return psnr(ref[mask], test[mask], rng)
