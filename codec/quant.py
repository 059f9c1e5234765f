"""k-bit quantisation of network weights (2..16 bits), for storing a fitted model compactly.

Scheme: **affine (asymmetric) uniform quantisation**, per output channel where that pays off.
For a channel with values in ``[lo, hi]`` and ``k`` bits::

    scale = (hi - lo) / (2**k - 1);   q = round((w - lo) / scale);   w' = lo + q * scale

so ``|w - w'| <= scale / 2``. Why affine rather than symmetric: biases and the SRNO/MLP weights
are often not centred on zero, and affine uses all ``2**k`` levels on the actual range (symmetric
wastes up to one bit on a one-sided range); its cost is one extra float per channel.

Granularity: a tensor with >= 2 dims whose output channels (dim 0) each hold at least
``MIN_CHANNEL_SIZE`` values is quantised per output channel; anything smaller (biases, the 3->SN
first SIREN layer, a 30x30 SIREN layer) gets one (scale, offset) pair for the whole tensor. The
pair costs two float32 values in the file; per channel on a 30x30 matrix that would add 27 % to
its 8-bit payload, for a small accuracy gain, so small rows share one pair.

The payload packs the integers of all tensors back to back, each tensor byte-aligned, ``k`` bits
per value, little-endian bit order (8 and 16 bits are plain ``uint8`` / little-endian ``uint16``).
The meta dict (msgpack-able) describes every tensor::

    {"scheme": "affine-v1", "tensors": {name: {"shape": [..], "bits": k, "axis": 0 or None,
     "scale": [float, ...], "offset": [float, ...], "byte_offset": int, "nbytes": int}}}

``dequantize_state`` validates the meta against the payload (lengths, limits, finite floats,
regions that tile the payload exactly) and raises :class:`~inrv.errors.FormatError` on any
inconsistency; it never allocates more than the payload length implies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import FormatError

SCHEME = "affine-v1"
MIN_CHANNEL_SIZE = 32
MAX_TENSORS = 4096
MAX_DIMS = 8


def _per_channel(shape: tuple[int, ...]) -> bool:
    if len(shape) < 2 or shape[0] < 2:
        return False
    return int(np.prod(shape[1:])) >= MIN_CHANNEL_SIZE


def _ranges(w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (lo, hi) of a 2D float64 array (rows = channels), as float32-representable values."""
    if w2.shape[1] == 0:
        z = np.zeros(w2.shape[0], np.float32)
        return z, z
    return w2.min(axis=1).astype(np.float32), w2.max(axis=1).astype(np.float32)


def _pack(q: np.ndarray, bits: int) -> bytes:
    q = q.astype(np.uint32).ravel()
    if bits == 8:
        return q.astype(np.uint8).tobytes()
    if bits == 16:
        return q.astype("<u2").tobytes()
    planes = ((q[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def _unpack(buf: bytes, n: int, bits: int) -> np.ndarray:
    if bits == 8:
        return np.frombuffer(buf, np.uint8, count=n).astype(np.uint32)
    if bits == 16:
        return np.frombuffer(buf, "<u2", count=n).astype(np.uint32)
    planes = np.unpackbits(np.frombuffer(buf, np.uint8), count=n * bits, bitorder="little")
    planes = planes.reshape(n, bits).astype(np.uint32)
    return (planes << np.arange(bits, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


def _nbytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def quantize_state(state: dict[str, np.ndarray], bits: int | dict[str, int] = 8) -> tuple[bytes, dict]:
    """Quantise named float arrays to ``bits`` (an int, or a per-name dict; default 8).

    Returns ``(payload, meta)``; ``dequantize_state(payload, meta)`` gives the arrays back with
    an error of at most half a quantisation step per value.
    """
    chunks: list[bytes] = []
    tensors: dict[str, Any] = {}
    offset = 0
    for name, arr in state.items():
        k = bits.get(name, 8) if isinstance(bits, dict) else bits
        k = int(k)
        if not 2 <= k <= 16:
            raise ValueError(f"bits must be in 2..16, got {k} for {name!r}")
        a = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"tensor {name!r} holds non-finite values")
        shape = tuple(int(s) for s in a.shape)
        per_ch = _per_channel(shape)
        w2 = a.reshape(shape[0], -1) if per_ch else a.reshape(1, -1)
        lo, hi = _ranges(w2)
        levels = (1 << k) - 1
        scale = ((hi.astype(np.float64) - lo) / levels).astype(np.float32)
        safe = np.where(scale > 0, scale, 1.0).astype(np.float64)
        q = np.rint((w2 - lo[:, None].astype(np.float64)) / safe[:, None])
        q = np.clip(q, 0, levels)
        buf = _pack(q, k)
        tensors[name] = {
            "shape": list(shape), "bits": k, "axis": 0 if per_ch else None,
            "scale": [float(s) for s in scale], "offset": [float(v) for v in lo],
            "byte_offset": offset, "nbytes": len(buf),
        }
        chunks.append(buf)
        offset += len(buf)
    return b"".join(chunks), {"scheme": SCHEME, "tensors": tensors}


def _check_floats(v: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise FormatError(f"quantisation meta: {what} must be a list of {n} numbers")
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise FormatError(f"quantisation meta: {what} holds non-numbers") from None
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise FormatError(f"quantisation meta: {what} holds non-finite values")
    return a


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def dequantize_state(payload: bytes, meta: dict) -> dict[str, np.ndarray]:
    """Inverse of :func:`quantize_state`: float32 arrays by name. Raises ``FormatError`` if the meta
    and payload disagree in any way (the payload may come from an untrusted file)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise FormatError("quantised payload must be bytes")
    payload = bytes(payload)
    if not isinstance(meta, dict) or meta.get("scheme") != SCHEME or not isinstance(meta.get("tensors"), dict):
        raise FormatError(f"quantisation meta is not a {SCHEME!r} dict")
    tensors = meta["tensors"]
    if len(tensors) > MAX_TENSORS:
        raise FormatError(f"quantisation meta lists {len(tensors)} tensors (limit {MAX_TENSORS})")
    regions = []
    checked = []
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, dict):
            raise FormatError("quantisation meta: bad tensor entry")
        shape, k, axis = t.get("shape"), t.get("bits"), t.get("axis")
        if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS or not all(_is_int(s) and s >= 0 for s in shape):
            raise FormatError(f"quantisation meta: bad shape for {name!r}")
        if not _is_int(k) or not 2 <= k <= 16:
            raise FormatError(f"quantisation meta: bad bit width for {name!r}")
        n = math.prod(int(s) for s in shape)
        # bound n by the payload before any allocation: n values need n*k bits
        if n * k > 8 * len(payload):
            raise FormatError(f"quantisation meta: tensor {name!r} is larger than the payload")
        if axis is None:
            rows = 1
        elif axis == 0 and len(shape) >= 2 and _is_int(axis):
            rows = int(shape[0])
        else:
            raise FormatError(f"quantisation meta: bad axis for {name!r}")
        scale = _check_floats(t.get("scale"), rows, f"scale of {name!r}")
        off = _check_floats(t.get("offset"), rows, f"offset of {name!r}")
        if np.any(scale < 0):
            raise FormatError(f"quantisation meta: negative scale for {name!r}")
        bo, nb = t.get("byte_offset"), t.get("nbytes")
        if not (_is_int(bo) and _is_int(nb)) or bo < 0 or nb != _nbytes(n, k) or bo + nb > len(payload):
            raise FormatError(f"quantisation meta: byte range of {name!r} does not fit the payload")
        regions.append((int(bo), int(nb)))
        checked.append((name, tuple(int(s) for s in shape), int(k), rows, scale, off, int(bo), int(nb), n))
    pos = 0
    for bo, nb in sorted(regions):
        if bo != pos:
            raise FormatError("quantisation meta: tensor byte ranges overlap or leave gaps")
        pos += nb
    if pos != len(payload):
        raise FormatError(f"quantised payload has {len(payload)} bytes, meta describes {pos}")
    out: dict[str, np.ndarray] = {}
    for name, shape, k, rows, scale, off, bo, nb, n in checked:
        q = _unpack(payload[bo:bo + nb], n, k).astype(np.float64)
        if n and q.max() > (1 << k) - 1:  # cannot happen with the packing above, but cheap
            raise FormatError(f"quantised value out of range in {name!r}")
        w = off[:, None] + q.reshape(rows, -1) * scale[:, None] if n else np.zeros((rows, 0))
        out[name] = w.astype(np.float32).reshape(shape)
    return out


def fake_quantize(t, bits: int):
    """Straight-through fake quantisation of a torch tensor with the same scheme and granularity as
    :func:`quantize_state`: the forward pass sees the dequantised values, the backward pass is the
    identity. Use it for a short quantisation-aware fine-tune."""
    import torch

    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    shape = tuple(t.shape)
    if t.numel() == 0:
        return t
    w2 = t.reshape(shape[0], -1) if _per_channel(shape) else t.reshape(1, -1)
    with torch.no_grad():
        lo = w2.min(dim=1, keepdim=True).values
        hi = w2.max(dim=1, keepdim=True).values
        scale = (hi - lo) / ((1 << int(bits)) - 1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.clamp(torch.round((w2 - lo) / safe), 0, (1 << int(bits)) - 1)
        deq = (lo + q * scale).reshape(shape)
    return t + (deq - t).detach()
