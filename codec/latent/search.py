"""The lambda search: the rate weight that meets a target rate (``target_bpv``) or quality
(``target_psnr``), found by a few fits."""

from __future__ import annotations

import dataclasses
import math

from ...errors import InputError
from ..base import Encoded
from .config import LatentConfig
from .fit import fit_once


def search_lambda(arr, cfg: LatentConfig, dev, progress) -> Encoded:
    """Pick lambda for ``target_bpv`` / ``target_psnr``: bracket on log-lambda, then regula falsi.

    Each fit gets ``dataclasses.replace(cfg, lmbda=..., steps=...)`` (``search_steps`` per search
    fit) and stores its config laid out like ``cfg`` (:func:`~inrv.codec.latent.fit.stored_config`)."""
    by_rate = cfg.target_bpv is not None
    target = float(cfg.target_bpv if by_rate else cfg.target_psnr)
    if target <= 0:
        raise InputError("target_bpv / target_psnr must be positive")
    s_steps = cfg.search_steps or cfg.steps
    tried: list[tuple[float, float, Encoded]] = []   # (log lambda, measure, encoded)

    def measure(e: Encoded) -> float:
        # both measures decrease as lambda grows (bpv in log, to make it near-linear in log lambda)
        return math.log(e.stats["bpv_total"]) if by_rate else e.stats["psnr"]

    goal = math.log(target) if by_rate else target
    x = math.log(cfg.lmbda)
    for it in range(max(1, cfg.search_iters)):
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=math.exp(x), steps=s_steps), dev, None, stored_like=cfg)
        tried.append((x, measure(e), e))
        closest = min(tried, key=lambda t: abs(t[1] - goal))
        for t in tried:   # keep one volume-sized reconstruction, the closest fit's, not one per fit
            if t is not closest:
                t[2].reconstruction = None
        if progress:
            progress(it + 1, cfg.search_iters, {"loss": e.stats["final_loss"], "lambda": math.exp(x),
                                                "bpv": e.stats["bpv_total"],
                                                "psnr": e.stats["psnr"]})
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
            x += 1.5 if above else -1.5
    best = min(tried, key=lambda t: abs(t[1] - goal))
    lam = math.exp(best[0])
    if s_steps != cfg.steps:
        e = fit_once(arr, dataclasses.replace(cfg, lmbda=lam), dev, progress, stored_like=cfg)
    else:
        e = best[2]
    e.stats["search"] = [{"lambda": math.exp(t[0]), "bpv": t[2].stats["bpv_total"], "psnr": t[2].stats["psnr"]}
                         for t in tried]
    return e
