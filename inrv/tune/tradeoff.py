"""The paper's trade-off point method (Sheibanifard et al. 2025, section 3.2.2, Eqs. 7-9), numpy only.

Measurements of a grid of configurations are held in 3D arrays indexed by the grid axes (the paper's
"3DA", its Fig. 2): for the ``paper`` model the axes are DS (downsampling factor), NC (SRNO channels)
and SN (SIREN neurons). Eq. 7 asks for

    min over cells of  f = 1/PSNR + (1 - |SSIM|) + (1 - CR)
    subject to  c_1 = x - DS_max = 0,  c_2 = y - NC_min = 0,  c_3 = z - SN_min = 0

and Eq. 8 solves it as the argmin over the grid of the augmented Lagrangian

    L = f - sum_i alpha_i c_i + (beta / 2) sum_i c_i^2.

The paper leaves the units of ``c_i`` and the values of ``alpha`` and ``beta`` open. Our reading
(documented in ``docs/model-paper.md``, "The trade-off point method"):

* the constraints measure how far a cell is from the grid's *cheapest corner* (the paper's DS_max is
  the mildest downsampling, scale 1/2 = the smallest factor; NC_min; SN_min), as the cell's **rank
  along each axis divided by (axis length - 1)**, so every ``c_i`` lies in [0, 1] whatever the axis
  units and the three constraints weigh alike;
* ``alpha`` and ``beta`` are fixed numbers (one evaluation of L, no multiplier updates: with equality
  constraints, iterating the multipliers would converge to the corner itself, the only feasible
  cell); defaults ``alpha = 0`` and ``beta = 0.1`` (going from one end of an axis to the other costs
  0.05, the size of a 0.05 SSIM change), so the penalty breaks near-ties in favour of smaller models;
* PSNR in dB, SSIM and CR as fractions (CR = 1 - params / voxels, which may be negative).

Marginals (Eq. 9, Figs. 3-5, Table 7): for each value of one axis, the **mean** over the other two axes
of 1/PSNR, 1 - |SSIM| and 1 - CR. (The paper writes a sum; its Table 7 holds the means: e.g. its
1 - CR of 0.23398 is the mean over the 33 DS = 1/2 cells of Tables 4-6; see benchmarks/paper_tables.py.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

DEFAULT_ALPHA = 0.0
DEFAULT_BETA = 0.1


@dataclass
class TradeOff:
    """The result of Eq. 8 over a grid."""

    axes: dict[str, list]            # axis name -> values, in grid order (cheapest first)
    index: tuple[int, ...]           # the trade-off cell
    point: dict[str, object]         # axis name -> value at the trade-off cell
    objective: np.ndarray            # f per cell (Eq. 7's objective)
    lagrangian: np.ndarray           # L per cell (Eq. 8)
    constraints: list[np.ndarray]    # c_i per cell, each in [0, 1]
    alpha: tuple[float, ...]
    beta: float
    terms: dict[str, np.ndarray] = field(default_factory=dict)   # "1/PSNR", "1-SSIM", "1-CR" per cell

    def marginals(self, axis: str | int) -> dict[str, np.ndarray]:
        """Eq. 9 as in the paper's Table 7: per value of ``axis``, the mean of each term over the other axes
        (NaN cells, e.g. failed fits, are left out)."""
        k = axis if isinstance(axis, int) else list(self.axes).index(axis)
        others = tuple(i for i in range(len(self.axes)) if i != k)
        return {name: _nanmean(v, others) for name, v in self.terms.items()}

    def slice_through_point(self, axis: str | int) -> dict[str, np.ndarray]:
        """The terms along ``axis`` with the other axes held at the trade-off cell."""
        k = axis if isinstance(axis, int) else list(self.axes).index(axis)
        sl = tuple(slice(None) if i == k else self.index[i] for i in range(len(self.axes)))
        return {name: np.asarray(v[sl], dtype=float) for name, v in self.terms.items()}


def _nanmean(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if not axes:
        return v
    finite = np.isfinite(v)
    s = np.where(finite, v, 0.0).sum(axis=axes)
    n = finite.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def objective_terms(psnr: np.ndarray, ssim: np.ndarray, cr: np.ndarray | None) -> dict[str, np.ndarray]:
    """The three terms of Eq. 7 per cell: 1/PSNR (dB), 1 - |SSIM|, 1 - CR (CR a fraction; None: left out).

    A cell with a non-finite or non-positive PSNR has no meaningful 1/PSNR: its terms are NaN and
    Eq. 8 never picks it."""
    psnr = np.asarray(psnr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(np.isfinite(psnr) & (psnr > 0), 1.0 / psnr, np.nan)
    inv = np.where(np.isposinf(psnr), 0.0, inv)  # lossless: 1/inf = 0
    terms = {"1/PSNR": inv, "1-SSIM": 1.0 - np.abs(np.asarray(ssim, dtype=float))}
    if cr is not None:
        terms["1-CR"] = 1.0 - np.asarray(cr, dtype=float)
    return terms


def constraint_arrays(shape: Sequence[int]) -> list[np.ndarray]:
    """c_i per cell: the cell's rank along axis i over (length_i - 1), in [0, 1] (0 on a 1-value axis)."""
    out = []
    for i, n in enumerate(shape):
        r = np.arange(n, dtype=float) / (n - 1) if n > 1 else np.zeros(1)
        view = [1] * len(shape)
        view[i] = n
        out.append(np.broadcast_to(r.reshape(view), tuple(shape)).copy())
    return out


def _per_axis(v: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    vals = (float(v),) * n if np.isscalar(v) else tuple(float(x) for x in v)  # type: ignore[arg-type]
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n or not all(math.isfinite(x) for x in vals):
        raise ValueError(f"{name} needs one value or {n} finite values, got {v!r}")
    return vals


def trade_off(axes: dict[str, list], psnr: np.ndarray, ssim: np.ndarray, cr: np.ndarray | None, *,
              alpha: float | Sequence[float] = DEFAULT_ALPHA, beta: float = DEFAULT_BETA) -> TradeOff:
    """Eq. 8 over a grid: ``psnr``, ``ssim``, ``cr`` are arrays shaped like the grid (``axes`` in order,
    each axis sorted from its cheapest value). Returns the trade-off cell and everything plotted.
    Raises ValueError when no cell has finite measurements."""
    shape = tuple(len(v) for v in axes.values())
    psnr = np.asarray(psnr, dtype=float)
    if psnr.shape != shape or np.shape(ssim) != shape or (cr is not None and np.shape(cr) != shape):
        raise ValueError(f"measurement arrays must have the grid's shape {shape}")
    a = _per_axis(alpha, len(shape), "alpha")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    terms = objective_terms(psnr, ssim, cr)
    f = sum(terms.values())
    cs = constraint_arrays(shape)
    lag = f - sum(ai * c for ai, c in zip(a, cs)) + 0.5 * float(beta) * sum(c * c for c in cs)
    if not np.isfinite(lag).any():
        raise ValueError("no grid cell has finite measurements")
    flat = int(np.nanargmin(np.where(np.isfinite(lag), lag, np.nan)))
    idx = tuple(int(i) for i in np.unravel_index(flat, shape))
    point = {name: vals[i] for (name, vals), i in zip(axes.items(), idx)}
    return TradeOff(axes={k: list(v) for k, v in axes.items()}, index=idx, point=point, objective=f,
                    lagrangian=lag, constraints=cs, alpha=a, beta=float(beta), terms=terms)


def pareto_front(rate: Sequence[float], quality: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower or equal rate and higher or equal quality,
    one of them strictly), sorted by rate."""
    r = np.asarray(rate, dtype=float)
    q = np.asarray(quality, dtype=float)
    ok = [i for i in range(len(r)) if np.isfinite(r[i]) and np.isfinite(q[i])]
    front = [i for i in ok if not any((r[j] <= r[i] and q[j] >= q[i]) and (r[j] < r[i] or q[j] > q[i])
                                      for j in ok)]
    return sorted(front, key=lambda i: (r[i], -q[i]))
