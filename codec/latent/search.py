"""The lambda search: the rate weight that meets a target rate (``target_bpv``) or quality
(``target_psnr``), found by a few fits, guided by a cheap rate model of the volume
(:mod:`.ratemodel`)."""

from __future__ import annotations

import dataclasses
import math

from ...errors import InputError
from ..base import Encoded
from .config import LatentConfig
from .fit import fit_once
from .ratemodel import PSNR_OFFSET, RATE_FACTOR, RateProxy, rate_level


def search_lambda(arr, cfg: LatentConfig, dev, progress, plan=None, file_bytes=None) -> Encoded:
    """Pick lambda for ``target_bpv`` / ``target_psnr``: bracket on log-lambda, then regula falsi.

    The first lambda is where the rate model (:class:`~inrv.codec.latent.ratemodel.RateProxy`),
    at its typical level, meets the target (``cfg.lmbda`` for a constant volume); until the target
    is bracketed, the next lambda comes from the proxy recalibrated by the first fit, then from the
    last two fits (:func:`_next_unbracketed`).
    ``file_bytes(encoded)``: the size of the file it becomes; the rate is then measured on it (the
    container's bytes included) instead of the model's own sections and config.

    Each fit gets ``dataclasses.replace(cfg, lmbda=..., steps=...)`` (``search_steps`` per search
    fit) and stores its config laid out like ``cfg`` (:func:`~inrv.codec.latent.fit.stored_config`).
    ``plan`` (a :class:`~inrv.codec.budget.Budget`): no search, but one short scout fit and the
    final fit (:func:`_budgeted`)."""
    by_rate = cfg.target_bpv is not None
    target = float(cfg.target_bpv if by_rate else cfg.target_psnr)
    if target <= 0:
        raise InputError("target_bpv / target_psnr must be positive")
    s_steps = cfg.search_steps or cfg.steps
    tried: list[tuple[float, float, Encoded]] = []   # (log lambda, measure, encoded)

    def measure(e: Encoded) -> float:
        # both measures decrease as lambda grows (bpv in log, to make it near-linear in log lambda)
        if by_rate and file_bytes is not None:
            e.stats["bpv_file"] = 8.0 * file_bytes(e) / arr.size
        return math.log(e.stats.get("bpv_file", e.stats["bpv_total"])) if by_rate else e.stats["psnr"]

    goal = math.log(target) if by_rate else target
    proxy = RateProxy(arr)
    start = proxy.solve(target, by_rate, RATE_FACTOR if by_rate else PSNR_OFFSET)
    x = math.log(start if start is not None else cfg.lmbda)
    if plan is not None:
        return _budgeted(arr, cfg, dev, progress, plan, proxy, x, by_rate, target, measure)
    for it in range(max(1, cfg.search_iters)):
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=math.exp(x), steps=s_steps), dev, None, stored_like=cfg)
        tried.append((x, measure(e), e))
        closest = min(tried, key=lambda t: abs(t[1] - goal))
        for t in tried:   # keep one volume-sized reconstruction, the closest fit's, not one per fit
            if t is not closest:
                t[2].reconstruction = None
        if progress:
            progress(it + 1, cfg.search_iters, {"loss": e.stats["final_loss"], "lambda": math.exp(x),
                                                "bpv": e.stats["bpv_total"], "psnr": e.stats["psnr"]})
        m = tried[-1][1]
        if (abs(math.exp(m) - target) / target < 0.03) if by_rate else abs(m - goal) < 0.1:
            break
        above = [t for t in tried if t[1] > goal]     # lambda too small
        below = [t for t in tried if t[1] <= goal]    # lambda too large
        if above and below:
            a = max(above, key=lambda t: t[0])
            b = min(below, key=lambda t: t[0])
            if b[0] <= a[0] or a[1] == b[1]:
                x = 0.5 * (a[0] + b[0])
            else:
                x = a[0] + (a[1] - goal) * (b[0] - a[0]) / (a[1] - b[1])
                lo_, hi_ = min(a[0], b[0]), max(a[0], b[0])
                x = min(max(x, lo_ + 0.1 * (hi_ - lo_)), hi_ - 0.1 * (hi_ - lo_))
        else:
            x = _next_unbracketed(proxy, tried, goal, target, by_rate, bool(above))
    best = min(tried, key=lambda t: abs(t[1] - goal))
    lam = math.exp(best[0])
    if s_steps != cfg.steps:
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=lam), dev, progress, stored_like=cfg)
    else:
        e = best[2]
    e.stats["search"] = [{"lambda": math.exp(t[0]), "bpv": t[2].stats["bpv_total"], "psnr": t[2].stats["psnr"]}
                         for t in tried]
    return e


# under a time budget: the scout fit's share of the time, and how the rate and the PSNR of a fit at a
# fixed lambda move with its training steps n (mni_patch64, lambda 1.5e-4 to 2.5e-3, 30 / 60 / 170 / 2 700
# steps: bpv ~ 1 + STEPS_RATE / n, within 5 %; PSNR ~ -STEPS_PSNR / n, within ~1 dB; model-latent.md)
SCOUT_SHARE = 0.2
STEPS_RATE = 14.0
STEPS_PSNR = 100.0


def _budgeted(arr, cfg: LatentConfig, dev, progress, plan, proxy: RateProxy, x: float, by_rate: bool,
              target: float, measure) -> Encoded:
    """A target under a time budget: a lambda search would split the budget between fits and leave
    the final one a few steps (on a 60 s budget, 15-19 steps and 6-9 dB below ``--lambda`` fits). So:
    a scout fit at the proxy's lambda on ``SCOUT_SHARE`` of the time; its measure carried from its
    steps to the steps the final fit will reach (``STEPS_RATE`` / ``STEPS_PSNR``); the proxy
    recalibrated on that; and the final fit, with the rest of the budget, where it meets the target.
    Where the scout landed far from the target (more than 30 % in rate or 1.5 dB; the proxy's curve is
    then a poor guide) and the time left allows three more such fits, a second scout at the corrected
    lambda, and the final lambda from the secant through the two. Where the time left would not cover
    another fit's fixed costs, the scout is the result. The target is met less closely than by a search
    (model-latent.md)."""
    goal = math.log(target) if by_rate else target
    prev: tuple[float, float] | None = None         # the scout before: (log lambda, measure carried to n_f)
    seen: list[dict] = []
    for k in range(2):
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=math.exp(x)), dev, None, stored_like=cfg,
                     plan=plan.part(SCOUT_SHARE if k == 0 else SCOUT_SHARE / (1 - SCOUT_SHARE)))
        n_s = max(1, int(e.stats["steps"]))
        ph = e.stats.get("phase_seconds", {})
        t_step = e.stats.get("step_seconds") or 0.0
        other = sum(ph.values()) - ph.get("train", 0.0)
        n_f = min(float(cfg.steps), max(float(n_s), (plan.left() - other) / t_step if t_step > 0 else n_s))
        m_f = measure(e) + (math.log((1 + STEPS_RATE / n_f) / (1 + STEPS_RATE / n_s)) if by_rate
                            else STEPS_PSNR * (1.0 / n_s - 1.0 / n_f))
        seen.append({"lambda": math.exp(x), "bpv": e.stats["bpv_total"], "psnr": e.stats["psnr"], "steps": n_s,
                     "scout": True, "predicted": math.exp(m_f) if by_rate else m_f})
        if progress:
            plan.report(progress, {"loss": e.stats["final_loss"], "lambda": math.exp(x), "bpv": e.stats["bpv_total"],
                                   "psnr": e.stats["psnr"]})
        nxt = _next_lambda(proxy, prev, (x, m_f), goal, target, by_rate)
        near = abs(m_f - goal) < (math.log(1.3) if by_rate else 1.5)
        prev = (x, m_f)
        if nxt is not None:
            x = min(x + 3.0, max(x - 3.0, nxt))
        if plan.left() < 1.5 * other + 3 * t_step:
            # the budget is too small for another fit's fixed costs (setup, weight-step search, coding: tens
            # of seconds on a whole brain): the scout is the result, its rate where the proxy put it
            e.stats["search"] = seen
            e.stats["scout_kept"] = True
            return e
        if near or plan.left() < 3 * sum(ph.values()):
            break
    e.reconstruction = None
    e = fit_once(arr, dataclasses.replace(cfg, lmbda=math.exp(x)), dev, progress, stored_like=cfg, plan=plan)
    e.stats["search"] = seen       # the scouts: measured, and the final fit's measure they predicted
    return e


def _next_unbracketed(proxy: RateProxy, tried, goal: float, target: float, by_rate: bool, up: bool) -> float:
    """The next log-lambda while every fit so far (``tried``: (log lambda, measure, ...)) landed on
    one side of the target (``up``: the rate or the PSNR too high, so lambda must grow). After one
    fit: where the proxy, at the level that fit measured, meets the target; after more: the secant
    through the last two fits (the volume's own slope). At least 0.1 and at most 3 in log-lambda
    from the last fit, in the right direction (1.5 where neither gives a step)."""
    sign = 1.0 if up else -1.0
    x, m = tried[-1][0], tried[-1][1]
    nxt = _next_lambda(proxy, tried[-2][:2] if len(tried) >= 2 else None, (x, m), goal, target, by_rate)
    if nxt is None:
        return x + 1.5 * sign
    return x + sign * min(3.0, max(0.1, (nxt - x) * sign))


def _next_lambda(proxy: RateProxy, prev, last: tuple[float, float], goal: float, target: float,
                 by_rate: bool) -> float | None:
    """The log-lambda at which the target is expected, from the last fit ``last`` ((log lambda,
    measure): its log bpv or its PSNR) and the one before, ``prev`` (or None): the secant through
    the two where they define one, else where the proxy, at the level ``last`` measured, meets the
    target; None for a constant volume after one fit."""
    x, m = last
    if prev is not None and prev[1] != m and prev[0] != x:
        return x + (goal - m) * (x - prev[0]) / (m - prev[1])
    r, p = proxy.measure(math.exp(x))
    lam = proxy.solve(target, by_rate, rate_level(math.exp(m), r) if by_rate else m - p)
    return None if lam is None else math.log(lam)
