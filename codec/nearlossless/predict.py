"""The hierarchical interpolation predictor with an in-loop error-bounded quantiser (integer arithmetic).

The volume is refined coarse to fine, like SZ3's interpolation mode. Voxel (0, 0, 0) is the root. With
``S = 2**L`` the smallest power of two >= the largest axis, the levels use half-strides ``s = S/2, S/4, ..., 1``
and each level runs three *passes*, one per array axis ``a``: the pass predicts the voxels whose index along
axis ``a`` is an odd multiple of ``s``, whose indices along the axes before ``a`` are multiples of ``s`` and
along the axes after ``a`` multiples of ``2s``. Every such voxel lies between two voxels along axis ``a``
(indices ``-s`` and ``+s`` away) that earlier passes reconstructed, so a whole pass is one vectorised step.

Prediction (all int64, identical on every machine): with ``b``/``c`` the reconstructed neighbours at
``-s``/``+s`` and ``a``/``d`` those at ``-3s``/``+3s`` along the pass axis,

* cubic, where all four exist:   ``p = (-a + 9 b + 9 c - d + 8) // 16``
* linear, where only ``b, c``:   ``p = (b + c + 1) // 2``
* copy, at the far edge (no c):  ``p = b``

(``//`` is floor division). The residual ``r = x - p`` is quantised with bins of width ``q = 2E + 1``:
``k = sign(r) * ((|r| + E) // q)``; the reconstruction ``p + k q``, clipped to the volume's ``[lo, hi]``, is
within ``E`` of ``x`` (clipping never moves a value away from an ``x`` inside ``[lo, hi]``). ``E = 0`` is
lossless. Later passes predict from the *reconstructed* values, so the decoder, which has only those,
computes the same predictions.

The *context* of each predicted voxel (which frequency table codes its symbol) is computed from
reconstructed data only: the level group, the local activity ``2|c - b| + |b - a| + |d - c|`` (where
``a``/``d`` exist, else ``2|c - b|``, else 0) in units of ``q``, and the magnitudes of the quantised
residuals of ``b`` and ``c`` plus ``floor(2 D / (4 axis))``, ``D`` the sum of the residual magnitudes of the
``4 axis`` diagonal neighbours (bucketed, see :func:`contexts`).

Payload version 2 (:func:`predict_v2`): the interpolation ``c`` is refined by the mean of ``c`` and those of
the 18 already decoded neighbours (:func:`neighbour_offsets`) of a *denoised* copy ``D`` that lie within
``th`` of ``c`` (the median of all 18 where fewer than 4 do: an edge); the activity is their spread. After a
voxel is decoded, ``D`` keeps ``(kd p + rec) / (kd + 1)`` where the residual was small (:func:`denoised`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

# bucket edges (integer thresholds; bucket = number of edges <= value)
ACT_EDGES = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 28, 40, 56, 80, 112, 160], dtype=np.int64)
RES_EDGES = np.array([1, 2, 4, 8], dtype=np.int64)
N_ACT = len(ACT_EDGES) + 1
N_RES = len(RES_EDGES) + 1
N_LEVEL_GROUPS = 3
N_MODE = 4                      # prediction vs the volume's most frequent value: far, mode-1, mode, mode+1
N_CONTEXTS = N_LEVEL_GROUPS * N_ACT * N_RES * N_MODE
# version 2 (same number of buckets, so the same context ids and 960 tables; level groups 0 and >= 1 only)
ACT_EDGES_V2 = np.array([2, 4, 6, 8, 12, 16, 22, 30, 40, 56, 80, 112, 160, 224, 320], dtype=np.int64)
RES_EDGES_V2 = np.array([1, 3, 6, 12], dtype=np.int64)
N_LEVEL_GROUPS_V2 = 2


@dataclass(frozen=True)
class Pass:
    level: int          # 0 = finest (s = 1)
    s: int              # half stride
    axis: int
    view: tuple         # slices selecting the pass's lattice (targets at odd positions along ``axis``)


def passes(shape: tuple[int, int, int]) -> Iterator[Pass]:
    """The passes, coarse to fine, in coding order."""
    m = max(shape)
    L = max(0, int(m - 1).bit_length())     # 2**L >= m
    for level in range(L - 1, -1, -1):
        s = 1 << level
        for axis in range(3):
            if shape[axis] <= s:
                continue                    # no odd multiple of s inside this axis
            view = tuple(slice(0, None, s) if b < axis else (slice(0, None, 2 * s) if b > axis
                                                               else slice(0, None, s)) for b in range(3))
            yield Pass(level, s, axis, view)


def _shift(a: np.ndarray, axis: int, start: int, stop: int | None) -> np.ndarray:
    sl = [slice(None)] * 3
    sl[axis] = slice(start, stop)
    return a[tuple(sl)]


def predict(R: np.ndarray, M: np.ndarray, p: Pass) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Prediction, activity, neighbour residual magnitude (int64, shaped like the targets of pass ``p``)
    and the targets' index inside ``R[p.view]``."""
    W = R[p.view]
    Mw = M[p.view]
    ax = p.axis
    t = W.shape[ax] // 2                 # targets at odd positions 1, 3, ..., 2t-1
    even = tuple(slice(None) if e != ax else slice(0, None, 2) for e in range(3))
    K = W[even]                          # known positions 0, 2, ..., 2m-2
    MK = Mw[even]
    m = K.shape[ax]
    b = _shift(K, ax, 0, t)
    pred = b.copy()                      # far edge (no c): copy b, activity 0
    act = np.zeros_like(b)
    nres = _shift(MK, ax, 0, t).astype(np.int64)
    has_c = min(t, m - 1)                # targets j < has_c have c = K[j+1]
    if has_c > 0:
        bb = _shift(K, ax, 0, has_c)
        cc = _shift(K, ax, 1, has_c + 1)
        _shift(pred, ax, 0, has_c)[...] = (bb + cc + 1) // 2
        _shift(act, ax, 0, has_c)[...] = 2 * np.abs(cc - bb)
        _shift(nres, ax, 0, has_c)[...] += _shift(MK, ax, 1, has_c + 1)
        hi = min(t, m - 2)               # cubic for 1 <= j < hi (a = K[j-1] and d = K[j+2] exist)
        if hi > 1:
            a_ = _shift(K, ax, 0, hi - 1)
            b_ = _shift(K, ax, 1, hi)
            c_ = _shift(K, ax, 2, hi + 1)
            d_ = _shift(K, ax, 3, hi + 2)
            _shift(pred, ax, 1, hi)[...] = (9 * (b_ + c_) - a_ - d_ + 8) // 16
            _shift(act, ax, 1, hi)[...] += np.abs(b_ - a_) + np.abs(d_ - c_)
    if ax > 0:
        # plus the mean residual magnitude of the diagonal neighbours (pass axis -s/+s, axis e -s/+s) for
        # each axis e refined earlier in this level (nearest index inside the volume at the borders)
        kb = np.arange(t) * 2
        kc = 2 * np.minimum(np.arange(t) + 1, m - 1)
        diag = np.zeros_like(nres)
        for e in range(ax):
            ne = W.shape[e]
            i = np.arange(ne)
            lo, hi = np.maximum(i - 1, 0), np.minimum(i + 1, ne - 1)
            for kk in (kb, kc):
                plane = np.take(Mw, kk, axis=ax)
                diag += np.take(plane, lo, axis=e).astype(np.int64) + np.take(plane, hi, axis=e)
        nres += (2 * diag) // (4 * ax)
    idx = tuple(slice(None) if e != ax else slice(1, 2 * t, 2) for e in range(3))
    return pred, act, nres, idx


def contexts(level: int, act: np.ndarray, nres: np.ndarray, q: int, pred: np.ndarray, mode: int,
             version: int = 1) -> np.ndarray:
    """Context ids (0 .. N_CONTEXTS-1) from the activity, the neighbour residual magnitudes and where the
    prediction lies against ``mode``, the most frequent value (background, air: a bias that depends on
    the level, which the residual alone does not show). Version 2 has its own activity scale (edges
    :data:`ACT_EDGES_V2`, :data:`RES_EDGES_V2`) and two level groups (ids below 640)."""
    v2 = version >= 2
    a = np.searchsorted(ACT_EDGES_V2 if v2 else ACT_EDGES, act // q, side="right")
    r = np.searchsorted(RES_EDGES_V2 if v2 else RES_EDGES, nres, side="right")
    g = min(level, (N_LEVEL_GROUPS_V2 if v2 else N_LEVEL_GROUPS) - 1)
    d = pred - mode
    f = np.where(np.abs(d) <= 1, d + 2, 0)
    return (((g * N_ACT + a) * N_RES + r) * N_MODE) + f


def quantise(r: np.ndarray, E: int) -> np.ndarray:
    if E == 0:
        return r
    q = 2 * E + 1
    k = (np.abs(r) + E) // q
    return np.where(r < 0, -k, k)



# --------------------------------------------------------------------------- payload version 2

#: version 2: offsets (in units of ``s``, per array axis) of the 18 neighbours every target of a pass has
#: already decoded: axes before the pass axis -1/0/+1, the pass axis -1/+1, axes after it -2/0/+2.
def neighbour_offsets(axis: int) -> list[tuple[int, int, int]]:
    import itertools

    rng = [(-1, 0, 1) if e < axis else ((-1, 1) if e == axis else (-2, 0, 2)) for e in range(3)]
    return list(itertools.product(*rng))


N_NEIGH = 18
EDGE_KEPT = 4                   # version 2: fewer kept neighbours than this: an edge (median)
SLAB = 1 << 19                  # version 2: targets per slab (memory: ~40 bytes x 18 per target)


def _reflect(i: np.ndarray, d: int, n: int) -> np.ndarray:
    """Index ``i + d`` inside ``0 .. n-1``: out of range -> ``i - d``; still out -> ``i``."""
    j = i + d
    j = np.where((j < 0) | (j > n - 1), i - d, j)
    return np.where((j < 0) | (j > n - 1), i, j)


def predict_v2(R: np.ndarray, D: np.ndarray, M: np.ndarray, p: Pass, th: int):
    """Version 2: the version-1 interpolation ``c`` (:func:`predict`) refined by an edge-preserving mean
    over the 18 decoded neighbours (:func:`neighbour_offsets`) of the *denoised* array ``D``: the
    neighbours ``v`` with ``|v - c| < th`` and ``c`` itself, ``p = floor((2 sum + n) / (2 n))`` with ``n`` the
    number of terms. Activity: ``2 * floor(sum |v - p| / n')`` over the ``n'`` kept neighbours (``n' >= 1``)
    plus 2 per neighbour left out. Returns ``(p, activity, neighbour residual magnitude, idx)``."""
    c, _, nres, idx = predict(R, M, p)
    s, a = p.s, p.axis
    L = D[::s, ::s, ::s]
    coords = [np.arange(n) if e < a else (np.arange(1, n, 2) if e == a else np.arange(0, n, 2))
              for e, n in enumerate(L.shape)]
    offs = neighbour_offsets(a)
    ix = {}
    for e in range(3):
        for d in {o[e] for o in offs}:
            ix[(e, d)] = _reflect(coords[e], d, L.shape[e])
    pr = np.empty_like(c)
    act = np.empty_like(c)
    rows = max(1, SLAB // max(1, c[0].size))      # slabs along the first axis bound the memory
    for r0 in range(0, c.shape[0], rows):
        sl = slice(r0, r0 + rows)
        pr[sl], act[sl] = _smooth(L, c[sl], {d: i[sl] for (e, d), i in ix.items() if e == 0}, ix, offs, th)
    return pr, act, nres, idx


def _smooth(L, c, ix0, ix, offs, th):
    """:func:`predict_v2`'s prediction and activity for one slab of targets (``ix0``: the slab's
    first-axis indices per offset along it)."""
    V = _gather(L, [ix0, {d: i for (e, d), i in ix.items() if e == 1}, {d: i for (e, d), i in ix.items() if e == 2}],
                offs)
    num = c.copy()
    den = np.ones_like(c)
    W = []
    for v in V:
        d = v - c
        np.abs(d, out=d)
        w = d < th
        W.append(w)
        num += v * w
        den += w
    pr = (2 * num + den) // (2 * den)
    dev = np.zeros_like(c)
    for v, w in zip(V, W):
        d = v - pr
        np.abs(d, out=d)
        d *= w
        dev += d
    kept = np.maximum(den - 1, 1)
    act = 2 * (dev // kept) + 2 * (N_NEIGH + 1 - den)
    # edges: fewer than EDGE_KEPT neighbours near c (c lies between two levels): the median of the 18
    # neighbours, floor((v_(9) + v_(10) + 1) / 2) of the sorted values, picks the side of the majority
    edge = np.nonzero(den - 1 < EDGE_KEPT)
    if edge[0].size:
        E = np.sort(np.stack([v[edge] for v in V]), axis=0)
        pr[edge] = (E[N_NEIGH // 2 - 1] + E[N_NEIGH // 2] + 1) // 2
    return pr, act


def _gather(L: np.ndarray, idx: list[dict], offs) -> list[np.ndarray]:
    """``L[np.ix_(idx[0][o[0]], idx[1][o[1]], idx[2][o[2]])]`` for every offset ``o`` (the same values),
    by one ``take`` per axis, the most selective axis first and its result shared between offsets."""
    frac = [len(next(iter(idx[e].values()))) / max(1, L.shape[e]) for e in range(3)]
    order = sorted(range(3), key=lambda e: (frac[e], e))
    first: dict[int, np.ndarray] = {}
    out = []
    for o in offs:
        d = o[order[0]]
        if d not in first:
            first[d] = np.take(L, idx[order[0]][d], axis=order[0])
        v = np.take(first[d], idx[order[1]][o[order[1]]], axis=order[1])
        out.append(np.take(v, idx[order[2]][o[order[2]]], axis=order[2]))
    return out


def denoised(pr: np.ndarray, rec: np.ndarray, th: int, kd: int) -> np.ndarray:
    """Version 2: the denoised value kept for a decoded voxel: ``floor((kd p + rec + (kd+1)//2) / (kd+1))``
    where ``|rec - p| < th``, else ``rec``."""
    return np.where(np.abs(rec - pr) < th, (kd * pr + rec + (kd + 1) // 2) // (kd + 1), rec)
