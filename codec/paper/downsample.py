"""3D k-space (ideal low-pass) downsampling of a volume. No training, no torch.

Rule, per array axis with ``n`` voxels and factor ``f`` (1, 2, 4 or 8; axes may differ):

* the low-res size is ``m = ceil(n / f)`` (so sizes not divisible by ``f`` work; an axis of one
  voxel stays one voxel);
* the low-res grid covers the **same field of view** as the original, with ``m`` cells: cell
  ``j`` is centred at ``(j + 0.5) / m`` of the field of view (cell-centred, like the coordinates
  of the SIREN and SRNO and like average pooling);
* the operation is ``fftn`` -> keep the ``m`` lowest frequencies per axis (a centred crop of the
  shifted spectrum) -> a phase ramp that moves the samples from the original grid's origin to the
  low-res cell centres (a shift of ``(n/m - 1) / 2`` original voxels) -> ``ifftn`` -> real part,
  times ``prod(m) / prod(n)`` so intensities (the mean, hence DC) are preserved.

A signal whose spectrum lies strictly inside the kept band is therefore sampled exactly at the
low-res cell centres; everything above the band is removed (ideal sinc low-pass, periodic
boundary). With even ``m`` the kept band includes the unpaired Nyquist bin ``-m/2``; the real part
keeps its cosine half.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ...errors import InputError


def lowres_shape(shape: Sequence[int], ds: Sequence[int]) -> tuple[int, ...]:
    """``ceil(n / f)`` per axis."""
    if len(shape) != len(ds):
        raise InputError(f"downsampling factors {tuple(ds)} do not match the volume's {len(shape)} axes")
    return tuple(max(1, math.ceil(int(n) / int(f))) for n, f in zip(shape, ds))


def kspace_downsample(volume: np.ndarray, ds: Sequence[int] | int) -> np.ndarray:
    """Low-pass and decimate ``volume`` by ``ds`` per axis in k-space; returns float32 of
    ``lowres_shape(volume.shape, ds)``."""
    import scipy.fft as sfft

    x = np.asarray(volume)
    if isinstance(ds, (int, np.integer)):
        ds = (int(ds),) * x.ndim
    ds = tuple(int(f) for f in ds)
    if any(f < 1 for f in ds):
        raise InputError(f"downsampling factors must be >= 1, got {ds}")
    if x.size == 0:
        raise InputError("cannot downsample an empty volume")
    out_shape = lowres_shape(x.shape, ds)
    x = x.astype(np.float32, copy=False)
    if out_shape == x.shape:
        return x.copy()
    axes = tuple(i for i, (n, m) in enumerate(zip(x.shape, out_shape)) if m != n)
    spec = sfft.fftn(x, axes=axes, workers=-1)
    for ax in axes:
        n, m = x.shape[ax], out_shape[ax]
        # frequencies kept: -(m // 2) .. (m - 1) // 2 (the centred crop of the fftshifted spectrum)
        k = np.concatenate([np.arange(0, (m - 1) // 2 + 1), np.arange(-(m // 2), 0)])
        spec = np.take(spec, np.mod(k, n), axis=ax)
        # move the first sample from original voxel 0 to the first low-res cell centre
        shift = (n / m - 1.0) / 2.0
        ramp = np.exp(2j * np.pi * k * shift / n).astype(spec.dtype)
        bshape = [1] * x.ndim
        bshape[ax] = m
        spec = spec * ramp.reshape(bshape)
    lr = sfft.ifftn(spec, axes=axes, workers=-1).real
    lr *= float(np.prod(out_shape)) / float(np.prod(x.shape))
    return lr.astype(np.float32)
