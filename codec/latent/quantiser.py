"""The quantiser of the latents in training (Cool-chic/C3 style): annealed soft rounding with
Kumaraswamy noise in the noise phase, straight-through rounding in the hard phase."""

from __future__ import annotations

import math

import torch

from .config import LatentConfig


def soft_round(x: torch.Tensor, t: float) -> torch.Tensor:
    """Differentiable rounding with temperature ``t`` (Agustsson & Theis 2020): identity as
    ``t`` grows, ``round`` as ``t -> 0``; used with an annealed ``t`` during training (as in C3)."""
    m = torch.floor(x) + 0.5
    a = 1.0 / t
    return m + torch.tanh(a * (x - m)) / (2.0 * math.tanh(a / 2.0))


def _kumaraswamy(shape, a: float, gen: torch.Generator) -> torch.Tensor:
    """Noise on [-1/2, 1/2]: a Kumaraswamy(a, b) variable minus 1/2 with its mode at 0, peaked for
    ``a > 1`` and uniform at ``a = 1`` (C3 anneals ``a`` from 2 to 1 alongside the temperature)."""
    u = torch.rand(shape, generator=gen)
    if abs(a - 1.0) < 1e-9:
        return u - 0.5
    b = ((a - 1.0) / 0.5 ** a + 1.0) / a
    return (1.0 - (1.0 - u).clamp_min(1e-12) ** (1.0 / b)) ** (1.0 / a) - 0.5


def rounded(cfg: LatentConfig, src, step: int, hard_from: int, gen: torch.Generator, dev):
    """The latents of this step as the synthesis (``qs``) and the rate (``noisy``) see them: soft
    rounding + Kumaraswamy noise, or uniform noise, before ``hard_from``; straight-through
    rounding after."""
    if step < hard_from and cfg.soft_round:
        # C3's recipe: soft rounding with a temperature annealed from t0 to t1, plus noise;
        # the rate sees the noisy soft-rounded value, the synthesis its soft rounding
        prog = step / max(1, hard_from)
        t = cfg.soft_t0 * (cfg.soft_t1 / cfg.soft_t0) ** prog
        ka = cfg.noise_a0 + (1.0 - cfg.noise_a0) * prog
        noisy = [soft_round(p, t) + _kumaraswamy(p.shape, ka, gen).to(dev) for p in src]
        return [soft_round(n, t) for n in noisy], noisy
    if step < hard_from:
        qs = [p + (torch.rand(p.shape, generator=gen).to(dev) - 0.5) for p in src]
        return qs, qs
    qs = [p + (torch.round(p) - p).detach() for p in src]
    return qs, qs
