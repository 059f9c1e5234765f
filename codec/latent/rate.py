"""The training-side rate: bits of the latents under the context model, differentiable, for the
whole volume or for the rows one slab step reads (an unbiased estimate, scaled up).

The features each latent's Laplace is predicted from are the context model's
(:mod:`inrv.codec.latent.context`: the 8-pass rate there reads them pass by pass through the same
per-pass plan the coder uses, :func:`inrv.codec.latent.context.pass_plan`)."""

from __future__ import annotations

import numpy as np
import torch

from ..entropy import laplace_bits
from .grids import up_torch
from .synthesis import rate_rows


def level_bits(st, qs, k: int, a: int, b: int, win=None, only=None) -> torch.Tensor:
    """Bits of rows [a, b) (first axis) of level k, computed on rows [a-1, b+1) so that every
    counted latent sees its real neighbours: equal to the whole-level sum's share. ``win``: ``qs``
    holds row windows (per level: row count, first row held). ``st``: the fit's state (its context
    model ``ctx``, level ``shapes``, ``cfg``, ``ckpt`` and checkerboard pass maps ``pmaps``)."""
    shapes = st.shapes
    lo_, hi_ = max(0, a - 1), min(shapes[k][0], b + 1)
    rows = np.arange(lo_, hi_)
    off = win[k][1] if win else 0
    coarse = up_torch(qs[k + 1], shapes[k], rows, *(win[k + 1] if win else (None, 0))) \
        if k + 1 < len(shapes) else None
    q = qs[k][:, lo_ - off:hi_ - off]
    if st.cfg.ctx_passes == 8:
        return st.ctx.pass_bits(q, coarse, k, lo_, a, b, checkpoint=st.ckpt, only=only)
    mean, ls = st.ctx(st.ctx.features(q, coarse, st.pmaps[k][lo_:hi_]), k)
    return laplace_bits(q[:, a - lo_:b - lo_], mean[:, a - lo_:b - lo_], ls[:, a - lo_:b - lo_]).sum()


# a level is sampled (``passes`` < 8) only where it holds at least this many latents: the coarse
# levels are cheap, and their few latents would make the estimate noisy
SAMPLE_MIN_LATENTS = 1 << 12


def rate_bits(st, qs, rows=None, win=None, passes: int = 8):
    """Bits of all latents; with ``rows`` (a slab of output rows), an unbiased estimate from
    the matching rows of every level, scaled up (bounded memory on large volumes).

    ``passes`` < 8 (8-pass context only): on the large levels, the bits of ``passes`` of the 8 coding
    passes drawn at random (``st.gen``), scaled by ``8 / passes``: an unbiased estimate of the rate
    for ``passes / 8`` of its cost (the training rate is most of a training step's work)."""
    bits = 0.0
    for k, sh in enumerate(st.shapes):
        n0 = sh[0]
        only, f = None, 1.0
        if passes < 8 and st.cfg.ctx_passes == 8 and st.cfg.channels * int(np.prod(sh)) >= SAMPLE_MIN_LATENTS:
            only = frozenset(int(i) for i in torch.randperm(8, generator=st.gen)[:passes])
            f = 8.0 / passes
        if rows is None:
            bits = bits + level_bits(st, qs, k, 0, n0, win, only) * f
        else:
            a, b = rate_rows(st.shape[0], n0, int(rows[0]), int(rows[-1]) + 1)
            bits = bits + level_bits(st, qs, k, a, b, win, only) * (f * n0 / (b - a))
    return bits


def total_bits(st, qs) -> float:
    """Exact bits of all latents, level by level in row chunks (no graph; bounded memory)."""
    tot = 0.0
    with torch.no_grad():
        for k, sh in enumerate(st.shapes):
            n0 = sh[0]
            step_r = max(1, st.cfg.max_voxels_per_step // max(1, sh[1] * sh[2]))
            for a in range(0, n0, step_r):
                tot += float(level_bits(st, qs, k, a, min(n0, a + step_r)))
    return tot
