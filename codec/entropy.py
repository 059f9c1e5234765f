"""Entropy coding of integer arrays with quantised-Laplace models (a thin ``constriction`` wrapper).

Two halves, used together by :mod:`inrv.codec.latent`:

* **Coding** (numpy only): :func:`encode_laplace` / :func:`decode_laplace` range-code an int array
  with one Laplace ``(mean, scale)`` pair per symbol, vectorised (constriction's
  ``stream.queue.RangeEncoder`` / ``RangeDecoder`` with ``stream.model.QuantizedLaplace``).
  :class:`LaplaceStream` codes several arrays, one after the other, into one stream.
* **Training** (torch): :func:`laplace_bits` is the differentiable number of bits the same model
  gives a (noisy or rounded) tensor: ``-log2(F(x + 1/2) - F(x - 1/2))``.

Bit-exactness. The range coder decodes exactly what was encoded only if the decoder feeds it
*bit-identical* model parameters. Parameters therefore never go straight from a float computation
to the coder; they are snapped first (:func:`snap_params`):

* the mean to a multiple of 1/16 (exact in binary floating point);
* the scale to an entry of a fixed table of 64 values, ``SCALE_TABLE``, written in this file as
  integers / 65536 (exact binary fractions, so no ``exp``/``log`` from the platform's maths
  library is involved in producing them). The index is ``round((log_scale - LOG_S0) / LOG_STEP)``
  computed with plain IEEE float64 subtraction/division.

Encoder and decoder compute ``log_scale`` and ``mean`` with the same float64 numpy code from
the same (dequantised) weights and the same decoded integers, so they snap to the same values.
"""

from __future__ import annotations

import math

import numpy as np

# 64 Laplace scales, geometric from 0.01 to 100, as exact binary fractions (value = q / 65536).
_SCALE_Q16 = (
    655, 759, 878, 1016, 1176, 1361, 1576, 1824, 2111, 2443, 2827, 3273, 3788, 4384, 5074, 5873,
    6798, 7868, 9106, 10540, 12199, 14119, 16342, 18915, 21892, 25339, 29327, 33944, 39288, 45473,
    52631, 60916, 70506, 81605, 94452, 109321, 126530, 146449, 169503, 196187, 227071, 262818,
    304191, 352078, 407503, 471653, 545902, 631840, 731306, 846430, 979677, 1133901, 1312403,
    1519005, 1758132, 2034902, 2355242, 2726011, 3155147, 3651839, 4226723, 4892105, 5662235,
    6553600,
)
SCALE_TABLE = np.asarray(_SCALE_Q16, dtype=np.float64) / 65536.0
LOG_S0 = -4.605170185988091          # log(0.01): log of the first table entry (nominal)
LOG_STEP = 0.14619587892025684       # log(100 / 0.01) / 63: ratio between entries (nominal)
SCALE_MIN = float(SCALE_TABLE[0])
SCALE_MAX = float(SCALE_TABLE[-1])
MEAN_STEP = 1.0 / 16.0


def snap_params(mean: np.ndarray, log_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Snap float64 model outputs to the values the coder is given (see module docstring)."""
    mean = np.asarray(mean, dtype=np.float64)
    log_scale = np.asarray(log_scale, dtype=np.float64)
    idx = np.rint((log_scale - LOG_S0) / LOG_STEP)
    idx = np.clip(np.nan_to_num(idx, nan=0.0), 0, len(SCALE_TABLE) - 1).astype(np.int64)
    m = np.rint(np.nan_to_num(mean) / MEAN_STEP) * MEAN_STEP
    m = np.clip(m, -1e6, 1e6)
    return m, SCALE_TABLE[idx]


def _model(lo: int, hi: int):
    import constriction

    return constriction.stream.model.QuantizedLaplace(int(lo), int(hi))


class LaplaceStream:
    """Encode several int arrays into one range-coded byte string, each with its own params.

    ``lo``/``hi`` bound every symbol (inclusive); they must be stored beside the bytes.
    """

    def __init__(self, lo: int, hi: int):
        import constriction

        if hi < lo:
            raise ValueError("empty symbol range")
        self.lo, self.hi = int(lo), int(hi)
        self._model = _model(lo, hi)
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> None:
        s = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if s.size == 0:
            return
        if s.min() < self.lo or s.max() > self.hi:
            raise ValueError("symbol outside the declared range")
        self._enc.encode(s, self._model, _f64(mean, s.size), _f64(scale, s.size))

    def getvalue(self) -> bytes:
        words = self._enc.get_compressed()
        return np.asarray(words, dtype="<u4").tobytes()


class LaplaceReader:
    """Decode, in the same order, what :class:`LaplaceStream` wrote."""

    def __init__(self, data: bytes, lo: int, hi: int):
        import constriction

        if len(data) % 4:
            raise ValueError("range-coded stream length is not a multiple of 4")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._model = _model(lo, hi)
        self._dec = constriction.stream.queue.RangeDecoder(words)

    def decode(self, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        mean = np.asarray(mean, dtype=np.float64).ravel()
        if mean.size == 0:
            return np.zeros(0, dtype=np.int32)
        return np.asarray(self._dec.decode(self._model, _f64(mean, mean.size), _f64(scale, mean.size)),
                          dtype=np.int32)


def encode_laplace(symbols: np.ndarray, mean, scale, lo: int | None = None,
                   hi: int | None = None) -> tuple[bytes, int, int]:
    """Range-code ``symbols`` (any int array) with per-symbol (or scalar) Laplace params.

    Returns ``(bytes, lo, hi)``; pass ``lo``/``hi`` back to :func:`decode_laplace`.
    """
    s = np.asarray(symbols).ravel()
    lo = int(s.min()) if lo is None and s.size else (0 if lo is None else lo)
    hi = int(s.max()) if hi is None and s.size else (0 if hi is None else hi)
    st = LaplaceStream(lo, hi)
    st.encode(s, mean, scale)
    return st.getvalue(), lo, hi


def decode_laplace(data: bytes, n: int, mean, scale, lo: int, hi: int) -> np.ndarray:
    """Inverse of :func:`encode_laplace` for ``n`` symbols (flat int32 array)."""
    mean = _f64(mean, n)
    return LaplaceReader(data, lo, hi).decode(mean, _f64(scale, n))


def _f64(v, n: int) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    return np.ascontiguousarray(a.ravel())


# ---------------------------------------------------------------- torch side (training)

def laplace_bits(x, mean, log_scale):
    """Differentiable bits of ``x`` under a Laplace(mean, exp(log_scale)) quantised to unit bins.

    ``log_scale`` is clamped to the coder's table range. Uses the numerically stable form of the
    Laplace CDF difference; the probability is floored at 2^-24 (about the coder's precision).
    Returns a tensor shaped like ``x`` (bits per element).
    """
    import torch

    b = torch.exp(log_scale.clamp(math.log(SCALE_MIN), math.log(SCALE_MAX)))
    d = (x - mean).abs()
    # P = F(d + 1/2) - F(d - 1/2) for the symmetric Laplace, evaluated on |x - mean|:
    # if d >= 1/2: 0.5 * (exp(-(d-0.5)/b) - exp(-(d+0.5)/b)); else 1 - 0.5*(exp(-(0.5-d)/b) + exp(-(0.5+d)/b))
    lo = torch.exp(-(d - 0.5).clamp_min(0) / b)
    hi = torch.exp(-(d + 0.5) / b)
    tail = 0.5 * (lo - hi)
    centre = 1.0 - 0.5 * (torch.exp(-(0.5 - d).clamp_min(0) / b) + hi)
    p = torch.where(d >= 0.5, tail, centre)
    return -torch.log2(p.clamp_min(2.0 ** -24))
