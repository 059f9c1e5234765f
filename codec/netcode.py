"""Entropy-coded network weights: a power-of-two step per tensor, Laplace-range-coded integers.

What Cool-chic does for its decoder weights, in a form that decodes bit for bit everywhere:

* Each tensor ``t`` gets a quantisation step ``2**-e_t`` (``e_t`` an integer, so ``n * 2**-e_t`` is
  exact in float32 for ``|n| < 2**24``) and is stored as the integers ``n = rint(w * 2**e_t)``.
* The integers of all tensors go, in storage order, into **one** range-coded stream
  (:class:`~inrv.codec.entropy.LaplaceStream`), each tensor with a zero-mean quantised Laplace of
  its own scale. The scale is coded as one small integer ``c`` (:func:`scale_of`): entry
  ``c % 64`` of the coder's exact scale table times ``2**(c // 64)``, so encoder and decoder
  feed the coder bit-identical parameters without any ``exp``/``log``.
* The file stores, per tensor, ``[e_t, c_t]`` (a few bytes of msgpack) and one symbol bound
  ``M`` (all integers lie in ``[-M, M]``); tensor shapes follow from the architecture.

Compared with 8-bit affine packing this spends bits where the weights are (most are near
zero) and lets the encoder pick each tensor's precision by its rate-distortion cost
(:func:`inrv.codec.latent` measures it): coarse steps where a tensor barely matters, fine
ones where the output is sensitive (the synthesis convolution at high rates).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .entropy import SCALE_TABLE, LaplaceReader, LaplaceStream

MAX_SYMBOL = (1 << 15) - 1      # |n| bound: keeps the coder's leaky support small
MAX_EXP = 30                    # step exponents e in [-MAX_EXP, MAX_EXP]
_NT = len(SCALE_TABLE)


def scale_of(code: int) -> float:
    """The Laplace scale of scale code ``code`` (exact: a table entry times a power of two)."""
    code = int(code)
    if not 0 <= code < 16 * _NT:
        raise InputError(f"bad weight scale code {code}")
    return float(SCALE_TABLE[code % _NT]) * float(2 ** (code // _NT))


def scale_code(n: np.ndarray) -> int:
    """The scale code closest (in log) to the maximum-likelihood Laplace scale of ``n``."""
    b = float(np.mean(np.abs(n))) if n.size else 0.0
    b = max(b, float(SCALE_TABLE[0]))
    k = 0
    while b / 2 ** k > SCALE_TABLE[-1] and k < 15:
        k += 1
    i = int(np.argmin(np.abs(np.log(SCALE_TABLE) - np.log(b / 2 ** k))))
    return k * _NT + i


def quantize(w: np.ndarray, e: int) -> np.ndarray:
    """Integers of ``w`` at step ``2**-e`` (clipped to the symbol bound)."""
    n = np.rint(np.asarray(w, dtype=np.float64) * 2.0 ** e)
    return np.clip(n, -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)


def dequantize(n: np.ndarray, e: int) -> np.ndarray:
    """``n * 2**-e`` in float32 (exact)."""
    return (np.asarray(n, dtype=np.float32) * np.float32(2.0 ** -e)).astype(np.float32)


def finest_exp(w: np.ndarray) -> int:
    """The finest step exponent whose integers still fit :data:`MAX_SYMBOL`."""
    m = float(np.max(np.abs(w))) if np.size(w) else 0.0
    if m == 0.0:
        return 0
    return int(min(MAX_EXP, np.floor(np.log2(MAX_SYMBOL / m))))


def laplace_bits_np(n: np.ndarray, scale: float) -> float:
    """Estimated bits of ``n`` under a zero-mean unit-bin Laplace of ``scale`` (the coder's model
    up to its probability floor)."""
    d = np.abs(np.asarray(n, dtype=np.float64))
    lo = np.exp(-np.maximum(d - 0.5, 0.0) / scale)
    hi = np.exp(-(d + 0.5) / scale)
    p = np.where(d >= 0.5, 0.5 * (lo - hi), 1.0 - np.exp(-0.5 / scale))
    return float(-np.log2(np.maximum(p, 2.0 ** -24)).sum())


def tensor_bits(w: np.ndarray, e: int) -> float:
    """Estimated coded bits of tensor ``w`` at step ``2**-e`` (its own best scale code)."""
    n = quantize(w, e)
    return laplace_bits_np(n, scale_of(scale_code(n)))


def encode(tensors: list[np.ndarray], exps: list[int]) -> tuple[bytes, list[list[int]], int]:
    """Code float tensors at steps ``2**-exps``: returns ``(payload, [[e, c], ...], M)``."""
    ints = [quantize(w, e) for w, e in zip(tensors, exps)]
    bound = max([1] + [int(np.max(np.abs(n))) for n in ints if n.size])
    codes = [scale_code(n) for n in ints]
    st = LaplaceStream(-bound, bound)
    for n, c in zip(ints, codes):
        st.encode(n.ravel(), 0.0, scale_of(c))
    return st.getvalue(), [[int(e), int(c)] for e, c in zip(exps, codes)], bound


def decode(payload: bytes, meta, bound, sizes: list[int]) -> list[np.ndarray]:
    """Inverse of :func:`encode`: flat float32 tensors of the given sizes."""
    if (not isinstance(meta, list) or len(meta) != len(sizes)
            or not all(isinstance(m, list) and len(m) == 2 for m in meta)):
        raise InputError("bad network-weight coding parameters")
    if not isinstance(bound, int) or not 1 <= bound <= MAX_SYMBOL:
        raise InputError("bad network-weight symbol bound")
    rd = LaplaceReader(payload, -bound, bound)
    out = []
    for (e, c), n in zip(meta, sizes):
        if not isinstance(e, int) or abs(e) > MAX_EXP:
            raise InputError("bad network-weight step")
        ints = rd.decode(np.zeros(n), np.full(n, scale_of(c)))
        out.append(dequantize(ints, e))
    return out
