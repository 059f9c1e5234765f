"""The near-lossless coder at a rate or quality target: the bound ``E`` that meets ``--bpv`` / ``--psnr``.

The coder has no lambda: its rate and its PSNR are set by the bound alone, and both are monotone in it
(a wider bin never costs more bits nor gives a smaller error). :func:`encode_to_target` finds the
smallest bound whose file fits a bits-per-voxel target, or the largest whose PSNR meets a PSNR target,
by a secant search on ``u = log(bin width)`` (bin width ``2E + 1`` for integer voxels, ``2E`` for
float): there the rate is close to a straight line (slope -0.4 to -0.8 on ``mni_patch64`` and
``mni_t1``) and the PSNR is ``const - 20 log10(width)``. Two to four encodes usually settle it.

:func:`inrv.compress` uses it so that a ``--bpv`` / ``--psnr`` target is met by whichever of the
neural model and this coder gives the better file (docs/cli.md, "The best coder for a target").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...encoded import Encoded
from .config import NearLosslessConfig

MAX_ENCODES = 6             # encodes per search at most
RATE_SLOPE = -0.6           # d log(bpv) / d log(width) before two encodes have measured it
WIDTH_TOL = 0.03            # stop when the bracket is this narrow in log(width) (or one integer bound)


@dataclass
class Trial:
    max_error: float
    bpv: float
    psnr: float
    seconds: float
    enc: Encoded = field(repr=False)


def encode_to_target(x: np.ndarray, *, bpv: float | None = None, psnr: float | None = None,
                     file_bytes: Callable[[Encoded], int] | None = None, lossless_bpv: float | None = None,
                     deadline: float | Callable[[Trial], float] | None = None, hopeless: Callable[[Trial], bool] | None = None,
                     binning: str = "auto", first_bound: float | None = None) -> tuple[Trial | None, list[Trial]]:
    """The near-lossless encoding of ``x`` that best meets one target: for ``bpv``, the smallest bound
    whose file (``file_bytes``; default: the sections) is at most ``bpv`` bits per voxel; for ``psnr``,
    the largest bound whose PSNR (peak = the data range of ``x``) is at least ``psnr``. Returns
    ``(best, trials)``: ``best`` is None where no bound > 0 meets the target (or ``deadline``, a
    ``time.perf_counter()`` value or a function of the latest trial that gives one, came before one
    did); ``trials`` lists every encode, in order.
    ``lossless_bpv`` (the rate at E = 0, where known) places the first bound. ``hopeless``: called with
    the trial that missed the target nearest to it (no bound meets the target better than that trial's
    PSNR, for ``bpv``, or its rate, for ``psnr``); where it says True the search stops there.
    ``binning``: the coder's (``NearLosslessConfig.binning``); ``first_bound``: the bound to try first."""
    from ..metrics import psnr as psnr_of
    from .model import NearLosslessModel

    if (bpv is None) == (psnr is None):
        raise ValueError("give exactly one of bpv and psnr")
    x = np.asarray(x)
    is_int = x.dtype.kind in "iub"
    lo, hi = float(np.min(x)), float(np.max(x))
    rng = hi - lo
    if rng <= 0:
        return None, []
    size = file_bytes or (lambda e: sum(len(b) for b in e.sections.values()))
    model = NearLosslessModel()
    # u = log(bin width); the bound of a width: integer voxels round it down (a smaller bound meets the
    # same bin or a narrower one), floats take it as it is
    u_min = math.log(3.0) if is_int else math.log(2.0 * rng * 1e-6)
    u_max = math.log(2.0 * math.floor(rng / 2) + 1.0) if is_int else math.log(rng)
    u_max = max(u_max, u_min)

    def bound(u: float) -> float:
        w = math.exp(min(max(u, u_min), u_max))
        return float(max(1, math.floor((w - 1.0) / 2.0 + 1e-9))) if is_int else w / 2.0

    def width(E: float) -> float:
        return 2.0 * E + 1.0 if is_int else 2.0 * E

    if first_bound is not None:
        u0 = math.log(width(first_bound))
    elif bpv is not None:
        # lossless rate x width^slope = bpv
        u0 = (math.log(lossless_bpv / bpv) / -RATE_SLOPE if lossless_bpv and lossless_bpv > bpv
              else math.log(width(1.0 if is_int else rng / 256.0)))
    else:
        # uniform errors over the whole volume: mse = width^2 / 12 (a lower bound on the width, since
        # voxels predicted exactly, e.g. background, have no error)
        u0 = math.log(math.sqrt(12.0) * rng * 10.0 ** (-psnr / 20.0))

    def slack(t: Trial) -> float:
        """>= 0 where the trial meets the target; increases with the bound for bpv, decreases for psnr."""
        if bpv is not None:
            return math.log(bpv) - math.log(max(t.bpv, 1e-12))
        return t.psnr - psnr

    trials: list[Trial] = []
    seen: dict[float, Trial] = {}
    predictor = "auto"

    def run(E: float) -> Trial:
        nonlocal predictor
        if E in seen:
            return seen[E]
        t0 = time.perf_counter()
        enc = model.fit(x, NearLosslessConfig(max_error=E, predictor=predictor, binning=binning))
        rec = enc.reconstruction
        t = Trial(E, 8.0 * size(enc) / x.size, psnr_of(x, rec, rng), time.perf_counter() - t0, enc)
        enc.reconstruction = None
        # the payload version the first encode chose serves the others (half the encode time where
        # "auto" tries both)
        predictor = "interp" if enc.config.get("v") == 1 else "smooth"
        trials.append(t)
        seen[E] = t
        return t

    def better(a: Trial, b: Trial) -> bool:
        """``a`` is nearer the target than ``b`` (on the same side of it)."""
        return a.max_error < b.max_error if bpv is not None else a.max_error > b.max_error

    ok: Trial | None = None     # the feasible trial nearest the target
    bad: Trial | None = None    # the infeasible one nearest it
    u = u0
    for _ in range(MAX_ENCODES):
        if deadline is not None and trials:
            end = deadline(trials[-1]) if callable(deadline) else deadline
            # the next encode takes about as long as the last, half as long after the first (which
            # tried both payload versions)
            if time.perf_counter() + trials[-1].seconds * (0.5 if len(trials) == 1 else 1.0) > end:
                break
        E = bound(u)
        t = run(E)
        s = slack(t)
        if s >= 0:
            ok = t if ok is None or better(t, ok) else ok
        else:
            bad = t if bad is None or better(bad, t) else bad
        if bad is not None and hopeless is not None and hopeless(bad):
            break
        if ok is not None and bad is not None:
            lo_e, hi_e = sorted((ok.max_error, bad.max_error))
            if (is_int and hi_e - lo_e <= 1) or math.log(width(hi_e) / width(lo_e)) < WIDTH_TOL:
                break
            # regula falsi between the two, on u
            ua, ub = math.log(width(ok.max_error)), math.log(width(bad.max_error))
            sa, sb = slack(ok), slack(bad)
            u = ua + (ub - ua) * sa / (sa - sb) if sa != sb else 0.5 * (ua + ub)
            u = min(max(u, min(ua, ub) + 0.05 * abs(ub - ua)), max(ua, ub) - 0.05 * abs(ub - ua))
            if is_int:      # a bound strictly between the two
                Eu = min(max(bound(u), lo_e + 1), hi_e - 1)
                u = math.log(width(Eu)) + 1e-9
        else:
            if s >= 0 and (bpv is not None and E <= 1 and is_int):
                break       # the smallest bound already fits
            if s < 0 and bpv is not None and bound(u_max) == E:
                break       # the largest bound does not fit
            if s < 0 and psnr is not None and E <= 1 and is_int:
                break       # even E = 1 is not good enough
            if s >= 0 and psnr is not None and bound(u_max) == E:
                break
            # step along the measured slope (secant of the last two trials) or the typical one
            if len(trials) >= 2 and trials[-1].max_error != trials[-2].max_error:
                a, b = trials[-2], trials[-1]
                du = math.log(width(b.max_error) / width(a.max_error))
                slope = (slack(b) - slack(a)) / du if du else 0.0
            else:
                slope = -RATE_SLOPE if bpv is not None else -20.0 / math.log(10.0)
            if bpv is not None:
                slope = max(slope, 0.1)
            else:
                slope = min(slope, -1.0)
            step = -s / slope
            u = math.log(width(E)) + max(-3.0, min(3.0, step))
            if is_int and bound(u) == E:
                u = math.log(width(E + (1 if (s < 0) == (bpv is not None) else -1)))
    return ok, trials
