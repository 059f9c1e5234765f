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
    ``plan`` (a :class:`~inrv.codec.budget.Budget`): each search fit gets a share of the time left
    (the search as a whole about half of it), the final fit at the chosen lambda what remains."""
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
    for it in range(max(1, cfg.search_iters)):
        sub = plan.part(0.5 / max(1, cfg.search_iters - it)) if plan else None
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=math.exp(x), steps=s_steps), dev, None, stored_like=cfg,
                     plan=sub)
        tried.append((x, measure(e), e))
        closest = min(tried, key=lambda t: abs(t[1] - goal))
        for t in tried:   # keep one volume-sized reconstruction, the closest fit's, not one per fit
            if t is not closest:
                t[2].reconstruction = None
        if progress:
            info = {"loss": e.stats["final_loss"], "lambda": math.exp(x), "bpv": e.stats["bpv_total"],
                    "psnr": e.stats["psnr"]}
            if plan:
                plan.report(progress, info)
            else:
                progress(it + 1, cfg.search_iters, info)
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
    if s_steps != cfg.steps or plan:
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=lam), dev, progress, stored_like=cfg, plan=plan)
    else:
        e = best[2]
    e.stats["search"] = [{"lambda": math.exp(t[0]), "bpv": t[2].stats["bpv_total"], "psnr": t[2].stats["psnr"]}
                         for t in tried]
    return e


def _next_unbracketed(proxy: RateProxy, tried, goal: float, target: float, by_rate: bool, up: bool) -> float:
    """The next log-lambda while every fit so far (``tried``: (log lambda, measure, ...)) landed on
    one side of the target (``up``: the rate or the PSNR too high, so lambda must grow). After one
    fit: where the proxy, at the level that fit measured, meets the target; after more: the secant
    through the last two fits (the volume's own slope). At least 0.1 and at most 3 in log-lambda
    from the last fit, in the right direction (1.5 where neither gives a step)."""
    sign = 1.0 if up else -1.0
    x, m = tried[-1][0], tried[-1][1]
    nxt = None
    if len(tried) >= 2 and tried[-2][1] != m and tried[-2][0] != x:
        x0, m0 = tried[-2][0], tried[-2][1]
        nxt = x + (goal - m) * (x - x0) / (m - m0)
    else:
        r, p = proxy.measure(math.exp(x))
        lam = proxy.solve(target, by_rate, rate_level(math.exp(m), r) if by_rate else m - p)
        nxt = None if lam is None else math.log(lam)
    if nxt is None:
        return x + 1.5 * sign
    return x + sign * min(3.0, max(0.1, (nxt - x) * sign))
