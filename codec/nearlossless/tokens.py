"""Symbols -> (token, raw bits): a small alphabet for the range coder plus uniformly coded low bits.

A quantised residual ``k`` (any int64) is zigzag-mapped to ``u >= 0`` (``0, -1, 1, -2, 2 ...`` -> ``0, 1, 2,
3, 4 ...``). Values ``u < 16`` are their own token. A larger ``u`` with ``n = bit_length(u) - 1 >= 4`` gets the
token ``16 + 4 (n - 4) + m``, where ``m`` is the two bits below its leading one, and its ``n - 2`` remaining
low bits are *raw bits*, stored verbatim (the "hybrid uint" of JPEG XL). 64-bit values need at most 256
tokens. All of this is integer arithmetic.
"""

from __future__ import annotations

import numpy as np

DIRECT = 16            # tokens 0..15 are the values themselves
MSB = 2                # mantissa bits kept in the token
N_TOKENS = DIRECT + 4 * 60


def zigzag(k: np.ndarray) -> np.ndarray:
    k = k.astype(np.int64)
    return np.where(k < 0, -2 * k - 1, 2 * k).astype(np.uint64)


def unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.uint64)
    half = (u >> np.uint64(1)).astype(np.int64)
    return np.where((u & np.uint64(1)) == 1, -half - 1, half)


def _bit_length(u: np.ndarray) -> np.ndarray:
    """floor(log2(u)) + 1 for u >= 1 (integer only: binary search over shifts)."""
    u = u.astype(np.uint64)
    n = np.zeros(u.shape, dtype=np.int64)
    for sh in (32, 16, 8, 4, 2, 1):
        big = (u >> np.uint64(sh)) > 0
        n += np.where(big, sh, 0)
        u = np.where(big, u >> np.uint64(sh), u)
    return n + (u > 0)


def split(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tokens, raw_values, raw_nbits)`` for the signed ints ``k`` (flat)."""
    u = zigzag(k.ravel())
    tok = u.astype(np.int64)
    nbits = np.zeros(u.shape, dtype=np.int64)
    raw = np.zeros(u.shape, dtype=np.uint64)
    big = u >= DIRECT
    if big.any():
        ub = u[big]
        n = _bit_length(ub) - 1                       # >= 4
        nb = n - MSB
        m = (ub >> nb.astype(np.uint64)) & np.uint64((1 << MSB) - 1)
        tok[big] = DIRECT + (n - 4) * (1 << MSB) + m.astype(np.int64)
        nbits[big] = nb
        raw[big] = ub & ((np.uint64(1) << nb.astype(np.uint64)) - np.uint64(1))
    return tok, raw, nbits


def token_nbits(tok: np.ndarray) -> np.ndarray:
    """Raw bits that follow each token."""
    t = tok.astype(np.int64)
    n = (t - DIRECT) // (1 << MSB) + 4
    return np.where(t < DIRECT, 0, n - MSB)


def join(tok: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split`: signed int64 values."""
    t = tok.astype(np.int64)
    u = t.astype(np.uint64)
    big = t >= DIRECT
    if big.any():
        tb = t[big] - DIRECT
        n = tb // (1 << MSB) + 4
        m = tb % (1 << MSB)
        nb = (n - MSB).astype(np.uint64)
        lead = (np.uint64(1) << np.uint64(MSB)) | m.astype(np.uint64)
        u[big] = (lead << nb) | raw[big].astype(np.uint64)
    return unzigzag(u)


def pack_bits(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """Concatenate the low ``nbits[i]`` bits of ``values[i]`` (most significant first) into bytes."""
    nbits = nbits.astype(np.int64)
    keep = nbits > 0
    if not keep.any():
        return b""
    v = values[keep].astype(np.uint64)
    nb = nbits[keep]
    width = int(nb.max())
    shifts = (nb[:, None] - 1 - np.arange(width)[None, :])            # MSB first
    valid = shifts >= 0
    bits = (v[:, None] >> np.clip(shifts, 0, 63).astype(np.uint64)) & np.uint64(1)
    return np.packbits(bits[valid].astype(np.uint8)).tobytes()
