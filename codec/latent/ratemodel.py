"""A rate model of the volume that costs a fraction of a training step, for the lambda search.

The latent model's rate and quality at a given lambda are only known after a fit. This module
predicts them from a much simpler transform coder: an orthonormal 3D Haar transform of the
normalised volume, every subband quantised with the step the latents start from
(:func:`~inrv.codec.latent.fit.init_latents`: ``delta = sqrt(6 lambda / ln 2)``) and costed at its
first-order entropy. Its curve has the latent model's shape but not its level: on ``mni_patch64``
and ``mni_t1``, over lambda 1.5e-4 to 4e-3, the latent model's bits per voxel were ``a x proxy^1.3-1.45``
with ``a`` = 0.43-0.80 depending on the volume and the training, and its PSNR 1.6-2.3 dB below the
proxy's (docs/model-latent.md, "Encode cost").

So the search (:mod:`.search`) starts at the lambda where the proxy, scaled by a typical factor,
meets the target, and after each fit re-measures the factor (rate) or the offset (PSNR) and solves
again on the proxy's curve: the curve's shape comes from the volume, its level from the fits.
numpy only, a few hundred milliseconds on a whole brain (the transform is computed once).
"""

from __future__ import annotations

import math

import numpy as np

# the latent model's bits per voxel as RATE_FACTOR x proxy^RATE_POWER (measured, see above), and its
# PSNR minus the proxy's: the starting point of a search before a fit has measured the volume's own
RATE_FACTOR = 0.55
RATE_POWER = 1.4
PSNR_OFFSET = -2.0
LAMBDA_RANGE = (1e-7, 10.0)     # the lambdas the solver considers
MAX_VOXELS = 1 << 24            # larger volumes are measured on evenly spaced slabs of this many voxels
LEVELS = 5


def _haar_bands(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """The subbands of an orthonormal 3D Haar transform of ``x`` (float32), ``levels`` deep: at each
    level every axis of at least 2 samples is split (an odd length padded by repeating its edge)."""
    bands = []
    a = x
    for _ in range(levels):
        axes = [ax for ax in range(3) if a.shape[ax] >= 2]
        if not axes:
            break
        parts = [a]
        for ax in axes:
            nxt = []
            for p in parts:
                if p.shape[ax] % 2:
                    p = np.concatenate([p, np.take(p, [-1], axis=ax)], axis=ax)
                ev = np.take(p, np.arange(0, p.shape[ax], 2), axis=ax)
                od = np.take(p, np.arange(1, p.shape[ax], 2), axis=ax)
                nxt += [(ev + od) * np.float32(math.sqrt(0.5)), (ev - od) * np.float32(math.sqrt(0.5))]
            parts = nxt
        a = parts[0]                      # the all-lowpass part; every other part is a detail band
        bands += [p.ravel() for p in parts[1:]]
    bands.append(a.ravel())
    return bands


class RateProxy:
    """The Haar proxy of one volume: ``measure(lmbda)`` gives its bits per voxel and PSNR, ``solve``
    the lambda at which the proxy, at a given level, meets a target."""

    def __init__(self, arr: np.ndarray, levels: int = LEVELS):
        vol = np.asarray(arr)
        vol = vol.reshape(vol.shape + (1,) * (3 - vol.ndim))
        lo, hi = float(vol.min()), float(vol.max())     # the range the fit normalises with
        if vol.size > MAX_VOXELS:
            # evenly spaced slabs of 8 rows (the statistics of the whole, at a bounded cost)
            plane = vol.shape[1] * vol.shape[2]
            n = max(1, MAX_VOXELS // (8 * plane))
            starts = np.linspace(0, max(0, vol.shape[0] - 8), n).astype(int)
            vol = np.concatenate([vol[s:s + 8] for s in starts], 0)
        self.flat = not hi > lo
        x = ((vol.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
        self.n = x.size
        self.bands = _haar_bands(x, levels)

    def measure(self, lmbda: float) -> tuple[float, float]:
        """(bits per voxel, PSNR in dB) of the proxy at ``lmbda``."""
        d = math.sqrt(6.0 * lmbda / math.log(2.0))
        bits = se = 0.0
        for b in self.bands:
            q = np.rint(b / d)
            err = b - q * d
            se += float(np.dot(err, err))
            qi = q.astype(np.int64)
            c = np.bincount(qi - qi.min())
            c = c[c > 0].astype(np.float64)
            bits += float(-(c * np.log2(c / b.size)).sum())
        psnr = 10.0 * math.log10(self.n / se) if se > 0 else 200.0
        return bits / self.n, psnr

    def solve(self, goal: float, by_rate: bool, level: float) -> float | None:
        """The lambda at which ``level x`` the proxy's bits per voxel to the power ``RATE_POWER``
        (``by_rate``), or its PSNR + ``level``, equals ``goal``; the nearest end of :data:`LAMBDA_RANGE` where it is outside the
        proxy's reach, None for a constant volume (no curve to solve on). Bisection on log lambda
        (the proxy's rate falls and its PSNR falls as lambda grows)."""
        if self.flat:
            return None

        def f(lx: float) -> float:
            r, p = self.measure(math.exp(lx))
            return (math.log(level * max(r, 1e-12) ** RATE_POWER) - math.log(goal)) if by_rate else (p + level - goal)

        a, b = (math.log(v) for v in LAMBDA_RANGE)
        fa, fb = f(a), f(b)
        if fa <= 0:
            return LAMBDA_RANGE[0]
        if fb >= 0:
            return LAMBDA_RANGE[1]
        for _ in range(30):           # to 1 % in lambda
            m = 0.5 * (a + b)
            if f(m) > 0:
                a = m
            else:
                b = m
            if b - a < 0.01:
                break
        return math.exp(0.5 * (a + b))


def rate_level(bpv: float, proxy_bpv: float) -> float:
    """The level (``RateProxy.solve``) at which the proxy's ``proxy_bpv`` predicts ``bpv``."""
    return bpv / max(proxy_bpv, 1e-12) ** RATE_POWER


def predict(arr: np.ndarray, *, bpv: float | None = None, psnr: float | None = None) -> float | None:
    """What the rate model expects of a latent fit before any fit: its PSNR at ``bpv`` bits per voxel,
    or its bits per voxel at ``psnr`` dB (the typical level, :data:`RATE_FACTOR` and
    :data:`PSNR_OFFSET`; measured fits land 2 dB either side). None for a constant volume.
    :func:`inrv.compress` weighs the near-lossless coder against it."""
    proxy = RateProxy(arr)
    if bpv is not None:
        lmbda = proxy.solve(float(bpv), True, RATE_FACTOR)
        return None if lmbda is None else proxy.measure(lmbda)[1] + PSNR_OFFSET
    lmbda = proxy.solve(float(psnr), False, PSNR_OFFSET)
    return None if lmbda is None else RATE_FACTOR * proxy.measure(lmbda)[0] ** RATE_POWER
