"""The exact coder: the context model re-run in fixed-order float32 numpy (bit-reproducible on any
IEEE machine) feeding the range coder, level by level and pass by pass, in both directions."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from ..entropy import LaplaceReader, LaplaceStream, snap_params
from .passes import coarse_context, parity, pass_plan
from .grids import up_numpy


_CTX_DTYPE = np.float32   # context-model arithmetic at coding time (IEEE single, elementwise)


def _np_context(w: dict[str, np.ndarray], feats: np.ndarray, level: int,
                n_used: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of :meth:`ContextModel.forward` in float32 (``_CTX_DTYPE``), written as elementwise
    multiply-adds in a fixed order (no BLAS, no FMA, no transcendental functions): every operation
    is one correctly rounded IEEE operation, so the result is reproducible bit for bit.
    Only the first ``n_used`` features are read (the rest are known to be zero)."""
    f = feats.reshape(feats.shape[0], -1)            # (F, n)
    w1, b1, w2, b2, lb = (w[k].astype(_CTX_DTYPE) for k in ("ctx.l1.weight", "ctx.l1.bias", "ctx.l2.weight",
                                                              "ctx.l2.bias", "ctx.level_bias"))
    nf = f.shape[0] if n_used is None else n_used
    out = _np_mlp(f, w1[:, :nf], b1, w2, (b2 + lb[level]).astype(_CTX_DTYPE), _np_mids(w))
    c = w2.shape[0] // 2
    shp = (c,) + feats.shape[1:]
    return out[:c].reshape(shp), out[c:].reshape(shp)


def _np_affine(f: np.ndarray, w: np.ndarray, b: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``w @ f + b`` in float32 as elementwise multiply-adds in a fixed order (bias first, then the
    inputs one by one): one correctly rounded IEEE operation at a time. f: (F, n); tmp: (n,) scratch."""
    out = np.empty((w.shape[0], f.shape[1]), _CTX_DTYPE)
    for j in range(w.shape[0]):
        acc = out[j]
        acc.fill(b[j])
        for i in range(w.shape[1]):
            np.multiply(f[i], w[j, i], out=tmp)
            np.add(acc, tmp, out=acc)
    return out


def _np_mlp(f: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
            mids: list[tuple[np.ndarray, np.ndarray]] = ()) -> np.ndarray:
    """``w2 @ relu(w1 @ f + b1) + b2`` in float32 with :func:`_np_affine`'s fixed-order arithmetic (the
    weights already selected, the biases already combined). f: (F, n) float32. Each ``(wm, bm)`` of
    ``mids`` adds a residual hidden layer ``h <- h + relu(wm @ h + bm)`` (:class:`ContextModel`)."""
    tmp = np.empty(f.shape[1], _CTX_DTYPE)
    h = _np_affine(f, w1, b1, tmp)
    np.maximum(h, 0.0, out=h)
    for wm, bm in mids:
        g = _np_affine(h, wm, bm, tmp)
        np.maximum(g, 0.0, out=g)
        np.add(h, g, out=h)
    return _np_affine(h, w2, b2, tmp)


def _np_mids(w: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The context model's residual hidden layers (``ctx.mids.<i>``), float32, in order."""
    out, i = [], 0
    while f"ctx.mids.{i}.weight" in w:
        out.append(tuple(np.asarray(w[f"ctx.mids.{i}.{k}"], dtype=np.float64).astype(_CTX_DTYPE)
                         for k in ("weight", "bias")))
        i += 1
    return out


def _gather_features(co_p: np.ndarray, cur_p: np.ndarray | None, idx: np.ndarray, strides) -> np.ndarray:
    """Context features (the order of :meth:`ContextModel.features`) of the cells at flat indices
    ``idx`` of the zero-padded grids ``co_p`` / ``cur_p`` ((C, n_padded) each). ``cur_p`` is None
    for the first checkerboard half (its neighbour features and flag are zero)."""
    offs = (-strides[0], strides[0], -strides[1], strides[1], -strides[2], strides[2])
    C = co_p.shape[0]
    parts = [co_p[:, idx]] + [co_p[:, idx + o] for o in offs]
    if cur_p is None:       # first half: the remaining 6C + 1 features are zero (not materialised)
        pass
    else:
        parts += [cur_p[:, idx + o] for o in offs] + [np.ones((1, idx.size))]
    return np.concatenate(parts, 0).astype(_CTX_DTYPE)


def _level_grid(out, k: int, shapes, C: int):
    """Working grids of level ``k`` for the coder: strides of the zero-padded grid, the coarser level
    (already decoded) upsampled onto it (flat, float64), the padded grid this level is decoded into,
    and its interior view."""
    shp = shapes[k]
    pshp = tuple(n + 2 for n in shp)
    strides = (pshp[1] * pshp[2], pshp[2], 1)
    co_p = np.zeros((C,) + pshp)
    if k + 1 < len(shapes):
        co_p[:, 1:-1, 1:-1, 1:-1] = up_numpy(out[k + 1].astype(np.float64), shp)
    cur_p = np.zeros((C,) + pshp)
    return strides, co_p.reshape(C, -1), cur_p, cur_p[:, 1:-1, 1:-1, 1:-1]


def _flat_inner(shp, strides, start=(0, 0, 0), step: int = 1) -> np.ndarray:
    """Padded flat indices (C order) of the interior cells ``start + step * (i, j, k)`` of a level."""
    i, j, k = (np.arange(a, n, step) + 1 for a, n in zip(start, shp))
    return i[:, None, None] * strides[0] + j[None, :, None] * strides[1] + k[None, None, :]


def _code_pass(coder, vals, plist, chunk: int, C: int, n: int):
    """Range-code one pass, chunk by chunk in order, with its snapped (mean, scale) per chunk: encode
    ``vals`` (C, n), or (``vals`` None) decode and return the (C, n) int32 latents."""
    dec = None if vals is not None else np.empty((C, n), np.int32)
    for s0, (m, sc) in zip(range(0, n, chunk), plist):
        if vals is not None:
            coder.encode(vals[:, s0:s0 + chunk], m, sc)
        else:
            dec[:, s0:s0 + chunk] = coder.decode(m, sc).reshape(C, -1)
    return vals if vals is not None else dec


def code_latents(latents: list[np.ndarray] | None, w: dict[str, np.ndarray], shapes, channels: int,
                 data: bytes | None = None, lo: int = 0, hi: int = 0, chunk: int = 1 << 19, passes: int = 2):
    """Encode (``latents`` given) or decode (``data`` given) all levels, coarse to fine.

    The same function runs both directions, so the model parameters fed to the coder are computed
    by literally the same code from the same integers. Per level, the passes of the context
    (``passes``: 8 = the 2x2x2 sub-lattices in :func:`~inrv.codec.latent.passes.pass_plan` order,
    the default since payload version 2; 2 = the checkerboard halves of older files), each pass in
    chunks of ``chunk`` latents (bounded memory; the chunking is part of the format only in that
    encoder and decoder use the same order). Returns bytes (encode) or the list of int32 arrays
    (decode), each (C, *level_shape).
    """
    if passes == 8:
        return _code_latents_8(latents, w, shapes, channels, data, lo, hi, chunk)
    if passes != 2:
        raise InputError(f"unsupported number of context passes {passes} (2 or 8)")
    enc = latents is not None
    coder = LaplaceStream(lo, hi) if enc else LaplaceReader(data, lo, hi)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    C = channels
    out: list[np.ndarray | None] = [None] * len(shapes)
    for k in range(len(shapes) - 1, -1, -1):
        strides, co_p, cur_p, inner = _level_grid(out, k, shapes, C)
        flat_inner = _flat_inner(shapes[k], strides)
        hb = parity(shapes[k])
        for half in (False, True):
            mask = hb if half else ~hb
            idx_all = flat_inner[mask]                  # padded flat indices, C order
            plist = []
            for s0 in range(0, idx_all.size, chunk):
                feats = _gather_features(co_p, cur_p.reshape(C, -1) if half else None, idx_all[s0:s0 + chunk],
                                         strides)
                mean, ls = _np_context(w, feats, k, n_used=feats.shape[0])
                plist.append(snap_params(mean, ls))
            vals = latents[k][:, mask].astype(np.int32) if enc else None
            inner[:, mask] = _code_pass(coder, vals, plist, chunk, C, idx_all.size)
        out[k] = np.ascontiguousarray(inner).astype(np.int32)
    return coder.getvalue() if enc else out


def _code_latents_8(latents, w, shapes, C: int, data, lo: int, hi: int, chunk: int):
    """:func:`code_latents` with the 8-pass (2x2x2 sub-lattice) context: per level, coarse to fine,
    pass by pass; a latent's features are the coarser level (value + 6 face neighbours) and those
    of its 26 neighbours already decoded (earlier passes). Features known to be zero for a pass are
    not computed: their weight columns are dropped and the pass one-hot is folded into the bias."""
    workers = max(1, min(8, torch.get_num_threads()))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return _code_8(latents, w, shapes, C, data, lo, hi, min(chunk, 1 << 17), pool)
    return _code_8(latents, w, shapes, C, data, lo, hi, chunk, None)


def _code_8(latents, w, shapes, C: int, data, lo: int, hi: int, chunk: int, pool):
    # the coarse context width follows from the stored first-layer shape (passes.coarse_context)
    plan = pass_plan(coarse_context(np.shape(w["ctx.l1.weight"])[1], C), C)
    enc = latents is not None
    coder = LaplaceStream(lo, hi) if enc else LaplaceReader(data, lo, hi)
    f32 = {k: np.asarray(v, dtype=np.float64).astype(_CTX_DTYPE) for k, v in w.items()}
    w1, b1, w2, b2, lb = (f32[k] for k in ("ctx.l1.weight", "ctx.l1.bias", "ctx.l2.weight", "ctx.l2.bias",
                                           "ctx.level_bias"))
    mids = _np_mids(w)
    out: list[np.ndarray | None] = [None] * len(shapes)
    for k in range(len(shapes) - 1, -1, -1):
        strides, co_p, cur_p, inner = _level_grid(out, k, shapes, C)
        cur_flat = cur_p.reshape(C, -1)              # view
        b2k = (b2 + lb[k]).astype(_CTX_DTYPE)
        for ps in plan:
            # pass p is the sub-lattice of index parities ps.phase: its cells in C order, as strided
            # views (no level-sized index or mask arrays: on 512^3 those were 1 GB each)
            sub = (slice(None),) + tuple(slice(b_, None, 2) for b_ in ps.phase)
            idx_all = _flat_inner(shapes[k], strides, ps.phase, 2).ravel()
            # the features of passes.Pass in its order, as offsets into the padded flat grids
            c_offs = [a * strides[0] + b * strides[1] + c for a, b, c in ps.coarse]
            s_offs = [a * strides[0] + b * strides[1] + c for a, b, c in ps.same]
            w1p = np.ascontiguousarray(w1[:, list(ps.cols)])
            b1p = (b1 + w1[:, ps.flag]).astype(_CTX_DTYPE)

            def params(s0, idx_all=idx_all, c_offs=c_offs, s_offs=s_offs, w1p=w1p, b1p=b1p, b2k=b2k):
                idx = idx_all[s0:s0 + chunk]
                parts = [co_p[:, idx + o] for o in c_offs] + [cur_flat[:, idx + o] for o in s_offs]
                feats = np.concatenate(parts, 0).astype(_CTX_DTYPE)
                o_ = _np_mlp(feats, w1p, b1p, w2, b2k, mids)
                return snap_params(o_[:C], o_[C:])

            # a pass reads only earlier passes, so the parameters of all its chunks can be computed
            # at once, in parallel (numpy releases the GIL); the coder then runs through them in order
            starts = list(range(0, idx_all.size, chunk))
            if pool is not None and len(starts) > 1:
                plist = list(pool.map(params, starts))
            else:
                plist = [params(s0) for s0 in starts]
            vals = latents[k][sub].reshape(C, -1).astype(np.int32) if enc else None
            inner[sub] = _code_pass(coder, vals, plist, chunk, C, idx_all.size).reshape(inner[sub].shape)
        out[k] = np.ascontiguousarray(inner).astype(np.int32)
    return coder.getvalue() if enc else out
