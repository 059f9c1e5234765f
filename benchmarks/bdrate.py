"""Bjontegaard delta rate (BD-rate) and the interpolation used by the rate-distortion tables.

BD-rate (G. Bjontegaard, VCEG-M33, 2001; the piecewise-cubic variant used by JVET/AV1 tools):

1. Each curve is reduced to its rate-distortion hull: points sorted by rate, keeping only points whose
   quality is higher than every cheaper point's (a codec parameter that costs more and gives less is
   not a point anyone would pick). Points with infinite or NaN quality (lossless) are dropped.
2. For each curve, log10(rate) is fitted as a function of quality (PSNR) with a monotone
   piecewise-cubic Hermite interpolant (``pchip``, default) or, with ``method="cubic"``, a
   least-squares cubic polynomial (the original VCEG-M33 recipe; needs 4 points).
3. Both fits are integrated over the PSNR interval where the two curves overlap,
   ``[max(min q_a, min q_t), min(max q_a, max q_t)]``; the mean difference ``d`` of log10(rate) over
   that interval gives BD-rate = ``(10**d - 1) * 100`` %: the average extra rate the test codec needs
   for the same quality as the anchor. Negative = the test codec saves rate.

NaN when the curves do not overlap or a curve has fewer than 2 hull points.
"""

from __future__ import annotations

import math

import numpy as np


def rd_hull(rates, quals) -> tuple[np.ndarray, np.ndarray]:
    """Sorted-by-rate points whose quality beats every cheaper point (finite values only)."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quals, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))          # by rate, best quality first among equal rates
    hr, hq = [], []
    best = -math.inf
    for i in order:
        if q[i] > best:
            hr.append(r[i])
            hq.append(q[i])
            best = q[i]
    return np.asarray(hr), np.asarray(hq)


def _fit_integral(logr: np.ndarray, q: np.ndarray, lo: float, hi: float, method: str) -> float:
    if method == "cubic" and len(q) >= 4:
        p = np.polyint(np.polyfit(q, logr, 3))
        return float(np.polyval(p, hi) - np.polyval(p, lo))
    from scipy.interpolate import PchipInterpolator

    return float(PchipInterpolator(q, logr).integrate(lo, hi))


def bd_rate(anchor_rates, anchor_quals, test_rates, test_quals, *, method: str = "pchip") -> float:
    """BD-rate of the test curve against the anchor, in percent (see module docstring)."""
    ar, aq = rd_hull(anchor_rates, anchor_quals)
    tr, tq = rd_hull(test_rates, test_quals)
    if len(aq) < 2 or len(tq) < 2:
        return math.nan
    lo, hi = max(aq.min(), tq.min()), min(aq.max(), tq.max())
    if not hi > lo:
        return math.nan
    ia = _fit_integral(np.log10(ar), aq, lo, hi, method)
    it = _fit_integral(np.log10(tr), tq, lo, hi, method)
    return (10.0 ** ((it - ia) / (hi - lo)) - 1.0) * 100.0


def overlap(anchor_quals, test_quals) -> tuple[float, float]:
    """The quality interval over which :func:`bd_rate` integrates (NaNs if empty)."""
    a = np.asarray([v for v in anchor_quals if np.isfinite(v)], dtype=np.float64)
    t = np.asarray([v for v in test_quals if np.isfinite(v)], dtype=np.float64)
    if not a.size or not t.size:
        return math.nan, math.nan
    lo, hi = max(a.min(), t.min()), min(a.max(), t.max())
    return (float(lo), float(hi)) if hi > lo else (math.nan, math.nan)


def quality_at(rates, quals, target: float, *, max_extrapolation: float = 1.25,
               max_end_step: float | None = None) -> tuple[float, bool]:
    """Quality at rate ``target``: pchip in log(rate) between hull points (linear with 2 points).

    Returns ``(value, extrapolated)``. A point with infinite quality (exact reconstruction) at a
    rate <= ``target`` (+1 %) gives ``inf``: a codec that is lossless at some rate stays lossless above it.
    Outside the measured rates the end segment is extended, but only up to a factor
    ``max_extrapolation`` in rate beyond the last point, and only if that segment's quality step is at
    most ``max_end_step`` (when given: a near-lossless jump such as 74 -> 104 dB is not a trend);
    else NaN. The flag is True for extrapolated values so that tables can mark them.
    """
    rr = np.asarray(rates, dtype=np.float64)
    qq = np.asarray(quals, dtype=np.float64)
    exact = rr[np.isposinf(qq)]
    if exact.size and exact.min() <= target * 1.01:   # 1 %: rate-targeting codecs overshoot by their header
        return math.inf, False
    r, q = rd_hull(rates, quals)
    if len(r) == 0:
        return math.nan, False
    if len(r) == 1:
        return (float(q[0]), False) if math.isclose(r[0], target, rel_tol=1e-9) else (math.nan, False)
    x = np.log(r)
    t = math.log(target)
    if x[0] <= t <= x[-1]:
        if len(x) == 2:
            return float(np.interp(t, x, q)), False
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, q)(t)), False
    if t < x[0]:
        if target < r[0] / max_extrapolation:
            return math.nan, False
        i, j = 0, 1
    else:
        if target > r[-1] * max_extrapolation:
            return math.nan, False
        i, j = -2, -1
    if max_end_step is not None and abs(q[j] - q[i]) > max_end_step:
        return math.nan, False
    slope = (q[j] - q[i]) / (x[j] - x[i])
    return float(q[i] + slope * (t - x[i])), True


def rate_at(rates, quals, quality: float) -> float:
    """Rate at which the hull reaches ``quality`` (pchip of log-rate vs quality); NaN outside its range."""
    r, q = rd_hull(rates, quals)
    if len(r) < 2 or not (q[0] <= quality <= q[-1]):
        return math.nan
    from scipy.interpolate import PchipInterpolator

    return float(np.exp(PchipInterpolator(q, np.log(r))(quality)))
