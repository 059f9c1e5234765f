"""Encode/decode an integer volume with a guaranteed maximum error ``E`` (``E = 0``: lossless).

Byte layout of the three sections (docs/format.md, "The nearlossless family"):

* ``nl.tab``  the frequency tables, one per context: for each context id ``0 .. N_CONTEXTS-1`` in order,
  a LEB128 varint ``n`` (tokens in its table; 0 = context unused), then ``n`` one-byte count codes
  (:func:`count_code`). A count of 0 is allowed (the coder still gives it the smallest probability).
* ``nl.rc``   the range-coded tokens (constriction's ``RangeEncoder``, 32-bit words, little-endian).
  Order: pass by pass (``predict.passes``); inside a pass, context by context in increasing id; inside a
  context, the pass's targets in C order. Each context's tokens use ``Categorical(counts, perfect=False)``.
* ``nl.raw``  the raw low bits of large tokens (``tokens.split``), MSB first, in the same order, padded
  with zero bits to a whole byte.
"""

from __future__ import annotations

import numpy as np

from . import predict as P
from . import tokens as T

PRECISION = 1 << 16          # tables with more symbols than this are scaled to about this total


def count_code(c: np.ndarray) -> np.ndarray:
    """Counts (0 .. 2**17) -> one byte each, a small float: ``c < 16`` as is, else ``16 + 16 e + m`` with
    ``c ~ (16 + m) << e`` (rounded down; 4 mantissa bits, relative error < 7 %)."""
    c = np.asarray(c, dtype=np.int64)
    e = np.zeros_like(c)
    v = c.copy()
    while np.any(v >= 32):
        big = v >= 32
        v = np.where(big, v >> 1, v)
        e += big
    return np.where(c < 16, c, 16 + 16 * e + (v - 16))


def count_value(code: np.ndarray) -> np.ndarray:
    """Inverse of :func:`count_code` (up to its rounding): the count the coder uses."""
    k = np.asarray(code, dtype=np.int64)
    e = np.maximum(k - 16, 0) // 16
    m = np.maximum(k - 16, 0) % 16
    return np.where(k < 16, k, (16 + m) << e)
RES_CAP = 1 << 20
PREDICTORS = ("auto", "interp", "smooth")     # encoder choice: both versions, version 1, version 2
BINNINGS = ("auto", "loop", "grid")             # E > 0: the smaller of the two, in-loop bins, a fixed grid
MAX_TH = 1 << 40                # version 2: smoothing threshold and weight limits
MAX_KD = 64
#: version 2 encoder: the smoothing thresholds tried, ``a + b * q`` stored units (``q = 2E + 1``: the
#: bin width of the bound), and the weight ``kd`` of the prediction in the denoised values
TH_CANDIDATES = ((96, 0), (64, 4), (80, 0))
KD = 1


def smoothing(E: int, unit: int = 1, cand: int = 0) -> tuple[int, int]:
    """The version-2 smoothing parameters ``(th, kd)`` the encoder tries (candidate ``cand``) for the
    in-loop bound ``E`` on integers that count steps of ``unit`` stored units (grid mode: ``unit = 2E + 1``)."""
    a, b = TH_CANDIDATES[cand]
    return max(1, (a + b * (2 * E + 1) * unit + unit // 2) // unit), KD


def _varints(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        v = int(v)
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
    return bytes(out)


def _tables_bytes(flat: list[int]) -> bytes:
    """``[n, code * n, n, code * n, ...]`` -> varint n, then the n codes as single bytes."""
    out, i = bytearray(), 0
    while i < len(flat):
        n = flat[i]
        out += _varints([n])
        out += bytes(flat[i + 1:i + 1 + n])
        i += 1 + n
    return bytes(out)


def _read_tables(data: bytes, n_contexts: int) -> list[np.ndarray | None]:
    """Inverse of :func:`_tables_bytes`: per context its count codes (None when unused)."""
    out: list[np.ndarray | None] = []
    pos = 0
    for _ in range(n_contexts):
        n, sh = 0, 0
        while True:
            if pos >= len(data) or sh > 28:
                raise ValueError("truncated tables")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << sh
            sh += 7
            if not b & 0x80:
                break
        if n == 0:
            out.append(None)
            continue
        if pos + n > len(data):
            raise ValueError("truncated tables")
        out.append(np.frombuffer(data, dtype=np.uint8, count=n, offset=pos).astype(np.int64))
        pos += n
    if pos != len(data):
        raise ValueError("trailing table bytes")
    return out


def _normalise(counts: np.ndarray) -> np.ndarray:
    total = int(counts.sum())
    if total <= PRECISION:
        return counts
    c = (counts.astype(np.int64) * PRECISION + total // 2) // total
    return np.where(counts > 0, np.maximum(c, 1), 0)


def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(np.asarray(counts, dtype=np.float64), perfect=False)


def _run_passes(shape, E: int, lo: int, hi: int, root: int, mode: int, step, smooth: tuple[int, int] | None = None):
    """Drive the passes; ``step(pass, pred, ctx, idx) -> k`` supplies each pass's quantised residuals.
    ``smooth = (th, kd)``: payload version 2's predictor (:func:`predict.predict_v2`), else version 1's."""
    q = 2 * E + 1
    R = np.zeros(shape, dtype=np.int64)
    M = np.zeros(shape, dtype=np.int32)
    R[0, 0, 0] = root
    D = None
    if smooth is not None:
        th, kd = smooth
        D = np.zeros(shape, dtype=np.int64)
        D[0, 0, 0] = root
    for p in P.passes(shape):
        if D is None:
            pred, act, nres, idx = P.predict(R, M, p)
        else:
            pred, act, nres, idx = P.predict_v2(R, D, M, p, th)
        ctx = P.contexts(p.level, act, nres, q, pred, mode, 1 if D is None else 2)
        k = step(p, pred, ctx, idx)
        rec = pred + k * q if E else pred + k
        np.clip(rec, lo, hi, out=rec)
        R[p.view][idx] = rec
        M[p.view][idx] = np.minimum(np.abs(k), RES_CAP)
        if D is not None:
            D[p.view][idx] = P.denoised(pred, rec, th, kd)
    return R


def mirror_axis(x: np.ndarray) -> int:
    """The first axis along which ``x`` is exactly mirror-symmetric (symmetric templates), else -1."""
    for a in range(3):
        if x.shape[a] > 1 and np.array_equal(x, np.flip(x, axis=a)):
            return a
    return -1


def _half(shape, a: int) -> tuple:
    return tuple(slice(0, (n + 1) // 2) if b == a else slice(None) for b, n in enumerate(shape))


def encode(x: np.ndarray, E: int, version: int = 2, predictor: str = "auto", binning: str = "auto"
           ) -> tuple[dict, dict[str, bytes], np.ndarray]:
    """Code the int array ``x`` (3D) with max error ``E``; returns ``(params, sections, reconstruction)``.

    ``E > 0`` has two ways to the bound (``binning``): residuals quantised in the prediction loop
    (``"loop"``), or the voxels quantised on a fixed grid first and the bin indices coded losslessly
    (``"grid"``, ``params["grid"]``); ``"auto"`` keeps the smaller. In-loop bins let a flat level drift by
    up to ``E`` (a zero background comes back as 1 or 2 over wide areas); the grid keeps the most frequent
    value exact, for a larger file on smooth volumes.

    A volume that is exactly mirror-symmetric along an axis (``params["mirror"]``) is coded once, its
    first half (``ceil(n/2)`` planes), and mirrored back on decode."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    if x.ndim != 3 or x.size == 0:
        raise ValueError("expected a non-empty 3D array")
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}")
    a = mirror_axis(x)
    h = np.ascontiguousarray(x[_half(x.shape, a)]) if a >= 0 else x
    params = sections = R = None
    if E == 0 or binning != "grid":
        params, sections, R = _encode_ordered(h, E, version, 1, predictor)
    if E > 0 and binning != "loop":
        # the other way to the same bound: quantise on a fixed grid first, then code the bin indices
        # losslessly (better where noise is about as large as E: in-loop bins follow the prediction)
        q, lo, hi = 2 * E + 1, int(h.min()), int(h.max())
        g0 = lo
        if version >= 2:        # bin centres on the most frequent value (air, background) where no voxel
            vals, counts = np.unique(h, return_counts=True)     # then comes back below lo
            g = lo - (lo - int(vals[np.argmax(counts)])) % q
            if ((lo - g + E) // q) * q + g >= lo:
                g0 = g
        gp, gs, gR = _encode_ordered((h - g0 + E) // q, 0, version, q, predictor)
        if sections is None or _size(gs) < _size(sections):
            gp["grid"] = [g0, q, hi]
            params, sections, R = gp, gs, np.minimum(gR * q + g0, hi)
    if a < 0:
        return params, sections, R
    params["mirror"] = a
    return params, sections, _unmirror(R, x.shape, a)


TRY_ALL_ORDERS = (1 << 12, 1 << 21)     # volumes with this many voxels (min, max) try all six axis orders


def axis_order(x: np.ndarray) -> list[int]:
    """Roughest axis first, smoothest last (the last pass of each level, half of the voxels, interpolates
    along the last axis): axes sorted by decreasing mean absolute difference between neighbours."""
    rough = [float(np.abs(np.diff(x, axis=a)).mean()) if x.shape[a] > 1 else -1.0 for a in range(3)]
    return sorted(range(3), key=lambda a: (-rough[a], a))


def _size(sections: dict[str, bytes]) -> int:
    return sum(len(b) for b in sections.values()) - len(sections["nl.tab"]) + _stored_len(sections["nl.tab"])


def _stored_len(b: bytes) -> int:
    """About what the container stores for these bytes (it uses zstd when that is smaller)."""
    import zstandard

    return min(len(b), len(zstandard.ZstdCompressor(level=19).compress(b)) + 4)


def _encode_ordered(x: np.ndarray, E: int, version: int, unit: int = 1, predictor: str = "auto"):
    """Code ``x`` with its axes permuted (``params["order"]``): the heuristic order, or on small volumes
    the best of all six; with ``version >= 2`` the smaller of payload versions 1 and 2 (``params["v"]``:
    the version-2 predictor pays on noisy flat regions, CT, and loses on smooth MRI). ``predictor``:
    ``"auto"`` (that choice), ``"interp"`` (version 1 only) or ``"smooth"`` (version 2 only)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}")
    best = None
    for v in ((1,) if version < 2 or predictor == "interp" else (2,) if predictor == "smooth" else (1, 2)):
        cand = _encode_ordered_v(x, E, v, unit)
        if best is None or _size(cand[1]) < _size(best[1]):
            best = cand
    return best


def _encode_ordered_v(x: np.ndarray, E: int, version: int, unit: int):
    import itertools

    orders = [axis_order(x)]
    if TRY_ALL_ORDERS[0] <= x.size <= TRY_ALL_ORDERS[1]:
        orders += [list(o) for o in itertools.permutations(range(3)) if list(o) != orders[0]]
    best = None
    for order in orders:
        params, sections, R = _encode(np.ascontiguousarray(np.transpose(x, order)), E, version, unit)
        size = _size(sections)
        if best is None or size < best[0]:
            best = (size, order, params, sections, R)
    if version >= 2:        # the other smoothing thresholds, on the best order
        order = best[1]
        for cand in range(1, len(TH_CANDIDATES)):
            if smoothing(E, unit, cand) in [smoothing(E, unit, c) for c in range(cand)]:
                continue
            params, sections, R = _encode(np.ascontiguousarray(np.transpose(x, order)), E, version, unit, cand)
            size = _size(sections)
            if size < best[0]:
                best = (size, order, params, sections, R)
    _, order, params, sections, R = best
    if order != [0, 1, 2]:
        params["order"] = order
    return params, sections, np.transpose(R, np.argsort(order))


def _unmirror(h: np.ndarray, shape, a: int) -> np.ndarray:
    out = np.empty(shape, dtype=h.dtype)
    out[_half(shape, a)] = h
    rest = shape[a] - h.shape[a]
    sl = tuple(slice(h.shape[a], None) if b == a else slice(None) for b in range(3))
    src = tuple(slice(rest - 1, None, -1) if b == a else slice(None) for b in range(3))
    out[sl] = h[src] if rest else out[sl]
    return out


def _encode(x: np.ndarray, E: int, version: int, unit: int = 1, cand: int = 0
            ) -> tuple[dict, dict[str, bytes], np.ndarray]:
    import constriction

    lo, hi = int(x.min()), int(x.max())
    root = int(x[0, 0, 0])
    per_pass = []
    def step(p, pred, ctx, idx):
        r = x[p.view][idx] - pred
        k = P.quantise(r, E)
        tok, raw, nb = T.split(k)
        c = ctx.ravel()
        order = np.argsort(c, kind="stable")
        per_pass.append((c[order], tok[order], raw[order], nb[order]))
        return k

    vals, counts = np.unique(x, return_counts=True)
    mode = int(vals[np.argmax(counts)])
    smooth = smoothing(E, unit, cand) if version >= 2 else None
    R = _run_passes(x.shape, E, lo, hi, root, mode, step, smooth)
    # tables
    hist = np.zeros((P.N_CONTEXTS, T.N_TOKENS), dtype=np.int64)
    for c, tok, _, _ in per_pass:
        if c.size:
            hist += np.bincount(c * T.N_TOKENS + tok, minlength=P.N_CONTEXTS * T.N_TOKENS).reshape(hist.shape)
    tables: list[np.ndarray | None] = []
    flat: list[int] = []
    for ci in range(P.N_CONTEXTS):
        h = hist[ci]
        nz = np.nonzero(h)[0]
        if nz.size == 0:
            tables.append(None)
            flat.append(0)
            continue
        n = max(2, int(nz[-1]) + 1)       # constriction needs two symbols at least
        codes = count_code(_normalise(h[:n]))
        tables.append(count_value(codes))
        flat.append(n)
        flat.extend(int(v) for v in codes)
    models = [None if t is None else _model(t) for t in tables]
    enc = constriction.stream.queue.RangeEncoder()
    raws, nbs = [], []
    for c, tok, raw, nb in per_pass:
        if c.size == 0:
            continue
        bounds = np.flatnonzero(np.diff(c)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [c.size]))
        for s, e in zip(starts, ends):
            enc.encode(tok[s:e].astype(np.int32), models[int(c[s])])
        raws.append(raw)
        nbs.append(nb)
    rc = np.asarray(enc.get_compressed(), dtype="<u4").tobytes()
    rawb = T.pack_bits(np.concatenate(raws), np.concatenate(nbs)) if raws else b""
    params = {"v": int(version), "E": int(E), "lo": lo, "hi": hi, "root": root, "mode": mode}
    if smooth is not None:
        params["th"], params["kd"] = smooth
    return params, {"nl.tab": _tables_bytes(flat), "nl.rc": rc, "nl.raw": rawb}, R


def decode(shape: tuple[int, int, int], params: dict, sections: dict[str, bytes]) -> np.ndarray:
    """Inverse of :func:`encode` (int64 array). Raises ValueError on inconsistent data."""
    shape = tuple(int(v) for v in shape)
    a = int(params.get("mirror", -1))
    if a not in (-1, 0, 1, 2):
        raise ValueError("bad mirror axis")
    order = [int(v) for v in params.get("order", [0, 1, 2])]
    if sorted(order) != [0, 1, 2]:
        raise ValueError("bad axis order")
    half = tuple((n + 1) // 2 if b == a else n for b, n in enumerate(shape))
    coded = _decode(tuple(half[o] for o in order), params, sections)
    if "grid" in params:
        g0, gq, g1 = (int(v) for v in params["grid"])
        if gq < 1 or g0 > g1:
            raise ValueError("bad grid")
        coded = np.minimum(coded * gq + g0, g1)
    R = np.transpose(coded, np.argsort(order))
    return R if a == -1 else _unmirror(R, shape, a)


def _decode(shape: tuple[int, int, int], params: dict, sections: dict[str, bytes]) -> np.ndarray:
    import constriction

    E, lo, hi, root = (int(params[k]) for k in ("E", "lo", "hi", "root"))
    if E < 0 or lo > hi or not lo <= root <= hi:
        raise ValueError("bad nearlossless parameters")
    models = []
    for codes in _read_tables(sections["nl.tab"], P.N_CONTEXTS):
        if codes is None:
            models.append(None)
            continue
        if codes.size > T.N_TOKENS or codes.size < 2:
            raise ValueError("bad table length")
        t = count_value(codes)
        if t.sum() <= 0:
            raise ValueError("empty table")
        models.append(_model(t))
    rcb = sections["nl.rc"]
    if len(rcb) % 4:
        raise ValueError("range-coded stream length is not a multiple of 4")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(rcb, dtype="<u4").astype(np.uint32))
    allbits = np.unpackbits(np.frombuffer(sections["nl.raw"], dtype=np.uint8))
    state = {"bit": 0}
    def step(p, pred, ctx, idx):
        c = ctx.ravel()
        order = np.argsort(c, kind="stable")
        cs = c[order]
        tok = np.empty(c.size, dtype=np.int64)
        if c.size:
            bounds = np.flatnonzero(np.diff(cs)) + 1
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [c.size]))
            for s, e in zip(starts, ends):
                m = models[int(cs[s])]
                if m is None:
                    raise ValueError("symbol in an unused context")
                tok[s:e] = dec.decode(m, int(e - s))
        if tok.size and tok.max() >= T.N_TOKENS:
            raise ValueError("bad token")
        nb = T.token_nbits(tok)
        raw = _take_bits(allbits, nb, state)
        k_sorted = T.join(tok, raw)
        k = np.empty_like(k_sorted)
        k[order] = k_sorted
        return k.reshape(pred.shape)

    mode = int(params["mode"])
    if not lo <= mode <= hi:
        raise ValueError("bad mode")
    smooth = None
    if "th" in params or "kd" in params:
        smooth = (int(params["th"]), int(params["kd"]))
        if not (1 <= smooth[0] <= MAX_TH and 0 <= smooth[1] <= MAX_KD):
            raise ValueError("bad smoothing parameters")
    return _run_passes(tuple(shape), E, lo, hi, root, mode, step, smooth)


def _take_bits(allbits: np.ndarray, nbits: np.ndarray, state: dict) -> np.ndarray:
    out = np.zeros(nbits.shape, dtype=np.uint64)
    keep = nbits > 0
    if not keep.any():
        return out
    nb = nbits[keep]
    off = state["bit"]
    total = int(nb.sum())
    if off + total > allbits.size:
        raise ValueError("raw-bit stream too short")
    width = int(nb.max())
    starts = off + np.concatenate(([0], np.cumsum(nb)[:-1]))
    cols = np.arange(width)[None, :]
    valid = cols < nb[:, None]
    pos = np.minimum(starts[:, None] + cols, allbits.size - 1)
    b = np.where(valid, allbits[pos], 0).astype(np.uint64)
    w = np.where(valid, nb[:, None] - 1 - cols, 0).astype(np.uint64)
    out[keep] = np.bitwise_or.reduce(b << w, axis=1)
    state["bit"] = off + total
    return out
