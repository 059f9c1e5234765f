"""Latent grids and their upsampling: level shapes and cell-centred linear / cubic (Keys)
interpolation, in torch (training, synthesis) and in float64 numpy (the coder's twin)."""

from __future__ import annotations

import numpy as np
import torch
from .config import level_shapes  # noqa: F401  (torch-free, shared with the configuration check)


def _interp(n_in: int, n_out: int, rows: np.ndarray | None = None):
    """Indices and weights of cell-centred linear interpolation from ``n_in`` to ``n_out`` samples.

    Pure float64 arithmetic (deterministic on any IEEE machine). ``rows`` picks output indices.
    """
    i = np.arange(n_out, dtype=np.float64) if rows is None else np.asarray(rows, dtype=np.float64)
    src = (i + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def up_torch(x: torch.Tensor, out: tuple[int, ...], rows: np.ndarray | None = None,
             n0: int | None = None, off: int = 0) -> torch.Tensor:
    """Upsample ``x`` (C, a, b, c) to (C, *out) separably; ``rows`` restricts axis 1 (first spatial).

    ``x`` may hold only rows ``[off, off + a)`` of a grid whose first axis has ``n0`` rows (a row
    window: the rows the output ``rows`` read must lie inside it)."""
    for ax, n_in, n_out, r in _resampled_axes(x, out, rows, n0):
        i0, i1, w = _interp(n_in, n_out, r)
        if ax == 0 and off:
            i0, i1 = i0 - off, i1 - off
        wt = torch.as_tensor(w, dtype=x.dtype, device=x.device).view(_along(ax, len(w)))
        a = x.index_select(ax + 1, torch.as_tensor(i0, device=x.device))
        b = x.index_select(ax + 1, torch.as_tensor(i1, device=x.device))
        x = a + (b - a) * wt
    return x


def _resampled_axes(x, out: tuple[int, ...], rows, n0: int | None):
    """``(axis, n_in, n_out, rows)`` of each spatial axis a separable upsampling of ``x`` (C, a, b, c;
    a tensor or an array)
    to ``out`` resamples (``rows`` and ``n0`` apply to the first; an axis already of its size is left)."""
    for ax in range(3):
        n_in = n0 if ax == 0 and n0 is not None else x.shape[ax + 1]
        r = rows if ax == 0 else None
        if n_in == out[ax] and r is None:
            continue
        yield ax, n_in, out[ax], r


def _along(ax: int, n: int) -> list[int]:
    """The view shape of ``n`` weights along spatial axis ``ax`` of a (C, a, b, c) tensor."""
    shape = [1, 1, 1, 1]
    shape[ax + 1] = n
    return shape


def _interp_cubic(n_in: int, n_out: int, rows: np.ndarray | None = None):
    """Taps (4 index arrays) and weights (4 arrays) of cell-centred cubic (Keys, a = -1/2)
    interpolation from ``n_in`` to ``n_out`` samples, edge-clamped; float64 numpy."""
    i = np.arange(n_out, dtype=np.float64) if rows is None else np.asarray(rows, dtype=np.float64)
    src = np.clip((i + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
    f = np.floor(src)
    t = src - f
    f = f.astype(np.int64)
    idx = [np.clip(f + d, 0, n_in - 1) for d in (-1, 0, 1, 2)]
    w = [((-0.5 * t + 1.0) * t - 0.5) * t,
         (1.5 * t - 2.5) * t * t + 1.0,
         ((-1.5 * t + 2.0) * t + 0.5) * t,
         (0.5 * t - 0.5) * t * t]
    return idx, w


def up_cubic_torch(x: torch.Tensor, out: tuple[int, ...], rows: np.ndarray | None = None,
                   n0: int | None = None, off: int = 0) -> torch.Tensor:
    """Like :func:`up_torch` with cubic (Keys) interpolation: smoother basis functions for the
    coarse latent levels of the synthesis."""
    for ax, n_in, n_out, r in _resampled_axes(x, out, rows, n0):
        idx, w = _interp_cubic(n_in, n_out, r)
        if ax == 0 and off:
            idx = [i - off for i in idx]
        shape = _along(ax, len(w[0]))
        acc = None
        for ii, ww in zip(idx, w):
            term = x.index_select(ax + 1, torch.as_tensor(ii, device=x.device)) * \
                torch.as_tensor(ww, dtype=x.dtype, device=x.device).view(shape)
            acc = term if acc is None else acc + term
        x = acc
    return x


def up_numpy(x: np.ndarray, out: tuple[int, ...]) -> np.ndarray:
    """float64 numpy twin of :func:`up_torch` (used by the entropy coder on both sides)."""
    for ax, n_in, n_out, _ in _resampled_axes(x, out, None, None):
        i0, i1, w = _interp(n_in, n_out)
        a = np.take(x, i0, axis=ax + 1)
        b = np.take(x, i1, axis=ax + 1)
        x = a + (b - a) * w.reshape(_along(ax, len(w)))
    return x
