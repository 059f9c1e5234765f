"""Adapters for the classical codecs that inrv is compared with (all from ``imagecodecs``).

Each adapter takes a 3D volume (a C-contiguous numpy array in its original dtype) and one
parameter value, encodes it, decodes it, and returns a :class:`Result`: the real compressed
bytes, the decoded array (already rounded and clipped back to the original dtype), and the
encode and decode wall-clock seconds. :func:`sweep` runs one codec over its parameter list.

Codecs (``CODECS``; the ``kind`` says how the volume is coded):

* ``sperr``   3D, fixed bits per voxel (SPERR's ``bpp`` mode); parameter = target bpv.
* ``sz3``     3D, absolute error bound; parameter = bound in stored units.
* ``zfp``     3D, fixed accuracy (ZFP's error-bounded mode); parameter = tolerance in stored units.
* ``jpeg2k``  2D slice by slice, raw J2K codestream (no JP2 container, which costs ~85 bytes per
  slice); parameter = target PSNR in dB given to OpenJPEG's rate allocation.
* ``htj2k``   2D slice by slice, High-Throughput JPEG 2000 (OpenJPH codestream); parameter =
  quantisation step (smaller = better).
* ``jpegxl``  2D slice by slice, JPEG XL (libjxl, no container); parameter = Butteraugli distance.
* ``jpegls``  2D slice by slice, JPEG-LS near-lossless; parameter = NEAR (max abs error per voxel).
* ``zstd``    lossless reference: the raw voxel bytes, zstd level 19.
* ``gzip-nifti`` lossless reference: a NIfTI-1 file (352-byte header + voxels) gzip level 6.

2D codecs code the slices along the last array axis (``vol[:, :, k]``; axial for RAS-ordered
NIfTI) and their bytes are summed over all slices. Integer data are given to the 2D codecs as
unsigned values shifted by the volume minimum (a lossless, invertible shift) with the real bit
depth declared (e.g. 12 bits for a 12-bit scan stored as int16). Float volumes are not supported
by the 2D codecs (they raise :class:`Unsupported`).
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


class Unsupported(Exception):
    """This codec cannot code this volume (dtype, size, or missing from the imagecodecs build)."""


@dataclass
class Result:
    codec: str
    param: float | None
    nbytes: int
    decoded: np.ndarray          # original dtype and shape
    enc_s: float
    dec_s: float


@dataclass(frozen=True)
class Codec:
    name: str
    kind: str                    # "3D", "2D" or "lossless"
    label: str                   # human-readable, for tables and plots
    param_name: str
    params: tuple                # full sweep
    quick_params: tuple          # a few points for --quick
    run: Callable[[np.ndarray, float | None], tuple[int, np.ndarray, float, float]]


def to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip decoded values back to ``dtype`` (integers: to the dtype's range)."""
    dtype = np.dtype(dtype)
    x = np.asarray(x)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x.astype(np.float64)), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _ic():
    try:
        import imagecodecs
    except ImportError as e:  # pragma: no cover - bench extra not installed
        raise Unsupported("imagecodecs is not installed (pip install 'inrv[bench]')") from e
    return imagecodecs


def _float_view(vol: np.ndarray) -> np.ndarray:
    """A C-contiguous float copy for the float-only 3D codecs (float64 keeps int32 exact)."""
    dt = np.float64 if vol.dtype in (np.float64, np.int32, np.uint32) else np.float32
    return np.ascontiguousarray(vol, dtype=dt)


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- 3D codecs

def _sperr(vol, bpv):
    ic = _ic()
    # SPERR reads the buffer as C order: a Fortran-ordered array (nibabel's default) silently decodes
    # to garbage, hence the explicit C-contiguous copy.
    f = _float_view(vol)
    enc, te = _timed(ic.sperr_encode, f, float(bpv), "bpp", numthreads=1)
    dec, td = _timed(ic.sperr_decode, enc, numthreads=1)
    return len(enc), dec.reshape(vol.shape), te, td


def _sz3(vol, bound):
    ic = _ic()
    f = _float_view(vol)
    enc, te = _timed(ic.sz3_encode, f, mode="abs", abs=float(bound))
    dec, td = _timed(ic.sz3_decode, enc, shape=f.shape, dtype=f.dtype)
    return len(enc), dec, te, td


def _zfp(vol, tol):
    ic = _ic()
    f = _float_view(vol)
    enc, te = _timed(ic.zfp_encode, f, level=float(tol), mode="a", numthreads=1)
    dec, td = _timed(ic.zfp_decode, enc)
    return len(enc), dec.reshape(vol.shape), te, td


# ---------------------------------------------------------------- 2D codecs

def _unsigned_slices(vol: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Shift integer data to unsigned starting at 0; return (array, offset, bit depth)."""
    if not np.issubdtype(vol.dtype, np.integer):
        raise Unsupported(f"2D image codecs need integer voxels, not {vol.dtype}")
    lo, hi = int(vol.min()), int(vol.max())
    span = hi - lo
    bits = max(1, int(span).bit_length())
    if bits > 16:
        raise Unsupported(f"{bits}-bit range is too wide for the 2D image codecs (max 16)")
    dt = np.uint8 if bits <= 8 else np.uint16
    return (vol.astype(np.int64) - lo).astype(dt), lo, bits


def _per_slice(vol, encode, decode):
    u, lo, bits = _unsigned_slices(vol)
    total = 0
    out = np.empty(vol.shape, dtype=np.float64)
    te = td = 0.0
    for k in range(u.shape[2]):
        s = np.ascontiguousarray(u[:, :, k])
        enc, t = _timed(encode, s, bits)
        te += t
        total += len(enc)
        dec, t = _timed(decode, enc)
        td += t
        out[:, :, k] = np.asarray(dec, dtype=np.float64).reshape(s.shape)
    return total, out + lo, te, td


def _jpeg2k(vol, target_db):
    ic = _ic()
    return _per_slice(
        vol,
        lambda s, bits: ic.jpeg2k_encode(s, level=float(target_db), codecformat="J2K", bitspersample=bits,
                                         numthreads=1),
        lambda b: ic.jpeg2k_decode(b, numthreads=1))


def _htj2k(vol, qstep):
    ic = _ic()
    # OpenJPH takes the bit depth from the dtype (8 or 16) and has no bit-depth option; its quantisation
    # step is relative to that full range. So that a step means the same on e.g. 12-bit data stored in
    # 16 bits, the values are scaled (exactly) to fill the container and scaled back after decoding.
    scale = {}

    def enc(s, bits):
        full = 8 * s.dtype.itemsize
        scale["k"] = 1 << (full - bits)
        return ic.htj2k_encode((s.astype(np.uint32) * scale["k"]).astype(s.dtype), level=float(qstep))

    def dec(b):
        return np.asarray(ic.htj2k_decode(b), dtype=np.float64) / scale["k"]

    return _per_slice(vol, enc, dec)


def _jpegxl(vol, distance):
    ic = _ic()
    return _per_slice(
        vol,
        lambda s, bits: ic.jpegxl_encode(s, distance=float(distance), bitspersample=bits, numthreads=1),
        lambda b: ic.jpegxl_decode(b, numthreads=1))


def _jpegls(vol, near):
    ic = _ic()
    return _per_slice(vol, lambda s, bits: ic.jpegls_encode(s, level=int(near)), ic.jpegls_decode)


# ---------------------------------------------------------------- lossless references

def _zstd(vol, level):
    import zstandard

    raw = np.ascontiguousarray(vol).tobytes()
    lvl = int(level) if level is not None else 19
    enc, te = _timed(zstandard.ZstdCompressor(level=lvl).compress, raw)
    dec, td = _timed(zstandard.ZstdDecompressor().decompress, enc)
    return len(enc), np.frombuffer(dec, dtype=vol.dtype).reshape(vol.shape), te, td


def _gzip_nifti(vol, level):
    import io

    import nibabel as nib

    lvl = int(level) if level is not None else 6

    def enc_fn():
        img = nib.Nifti1Image(np.asarray(vol), np.eye(4))
        img.set_data_dtype(vol.dtype)
        return gzip.compress(img.to_bytes(), compresslevel=lvl, mtime=0)

    def dec_fn(b):
        img = nib.Nifti1Image.from_stream(io.BytesIO(gzip.decompress(b)))
        return np.asarray(img.dataobj)

    enc, te = _timed(enc_fn)
    dec, td = _timed(dec_fn, enc)
    return len(enc), dec, te, td


# ---------------------------------------------------------------- error-bounded and lossless anchors (issue #16)
# Integer data with a bound E (stored units). A float codec given the bound E + 0.499 and rounded back to the
# integer dtype is still within E (|y - x| < E + 1/2 and x integral), so the float codecs get that slack.

def _int_slack(vol, bound):
    return float(bound) + 0.499 if np.issubdtype(vol.dtype, np.integer) else float(bound)


def _sz3_int(vol, bound):
    ic = _ic()
    f = _float_view(vol)
    enc, te = _timed(ic.sz3_encode, f, mode="abs", abs=_int_slack(vol, bound))
    dec, td = _timed(ic.sz3_decode, enc, shape=f.shape, dtype=f.dtype)
    return len(enc), dec, te, td


def _sperr_pwe(vol, bound):
    ic = _ic()
    f = _float_view(vol)
    enc, te = _timed(ic.sperr_encode, f, _int_slack(vol, bound), "pwe", numthreads=1)
    dec, td = _timed(ic.sperr_decode, enc, numthreads=1)
    return len(enc), dec.reshape(vol.shape), te, td


def _quantised(vol, bound):
    """Uniform quantisation with bins of width 2E+1 (|error| <= E): (indices, decoder)."""
    q = 2 * int(bound) + 1
    x = vol.astype(np.int64)
    lo = int(x.min())
    idx = (x - lo + int(bound)) // q
    span = int(idx.max()) if idx.size else 0
    dt = np.uint8 if span < 256 else (np.uint16 if span < 65536 else np.uint32)
    hi = int(x.max())

    def back(i):
        return np.minimum(i.astype(np.int64) * q + lo, hi)
    return np.ascontiguousarray(idx.astype(dt)), back


def _quant_xz(vol, bound):
    import lzma

    idx, back = _quantised(vol, bound)
    enc, te = _timed(lzma.compress, idx.tobytes(), preset=9 | lzma.PRESET_EXTREME)
    dec, td = _timed(lzma.decompress, enc)
    return len(enc), back(np.frombuffer(dec, dtype=idx.dtype).reshape(vol.shape)), te, td


def _quant_zstd(vol, bound):
    import zstandard

    idx, back = _quantised(vol, bound)
    enc, te = _timed(zstandard.ZstdCompressor(level=19).compress, idx.tobytes())
    dec, td = _timed(zstandard.ZstdDecompressor().decompress, enc)
    return len(enc), back(np.frombuffer(dec, dtype=idx.dtype).reshape(vol.shape)), te, td


def _jpeg2k_lossless(vol, _):
    ic = _ic()
    return _per_slice(vol, lambda s, bits: ic.jpeg2k_encode(s, level=0, codecformat="J2K", reversible=True,
                                                            bitspersample=bits, numthreads=1),
                      lambda b: ic.jpeg2k_decode(b, numthreads=1))


def _jpegxl_lossless(vol, effort):
    ic = _ic()
    return _per_slice(vol, lambda s, bits: ic.jpegxl_encode(s, lossless=True, effort=int(effort), bitspersample=bits,
                                                            numthreads=1),
                      lambda b: ic.jpegxl_decode(b, numthreads=1))


CODECS: dict[str, Codec] = {c.name: c for c in [
    Codec("sperr", "3D", "SPERR 3D (bpp)", "bpv",
          (0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.65, 0.775, 1.0, 1.5, 2.0, 3.0), (0.2, 0.5, 1.0, 2.0), _sperr),
    Codec("sz3", "3D", "SZ3 3D (abs bound)", "abs",
          (64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1.5, 1, 0.5), (16, 6, 2, 0.5), _sz3),
    Codec("zfp", "3D", "ZFP 3D (accuracy)", "tolerance",
          (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2), (128, 32, 8), _zfp),
    Codec("jpeg2k", "2D", "JPEG 2000 2D (raw J2K)", "target dB",
          (20, 22, 24, 27, 30, 33, 36, 39, 42, 45, 48, 52, 56), (27, 36, 48), _jpeg2k),
    Codec("htj2k", "2D", "HTJ2K 2D", "qstep",
          (0.8, 0.5, 0.3, 0.2, 0.14, 0.1, 0.07, 0.05, 0.035, 0.025, 0.018, 0.012, 0.008),
          (0.2, 0.05, 0.012), _htj2k),
    Codec("jpegxl", "2D", "JPEG XL 2D", "distance",
          (25.0, 18.0, 12.0, 9.0, 7.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5, 0.3), (8.0, 2.5, 0.8), _jpegxl),
    Codec("jpegls", "2D", "JPEG-LS 2D near-lossless", "NEAR",
          (24, 16, 12, 8, 6, 4, 3, 2, 1), (8, 3, 1), _jpegls),
    Codec("zstd", "lossless", "zstd -19 (lossless)", "level", (19,), (19,), _zstd),
    Codec("gzip-nifti", "lossless", "gzip NIfTI (lossless)", "level", (6,), (6,), _gzip_nifti),
    # error-bounded (parameter = max error E in stored units; E = 0 lossless) and lossless anchors
    Codec("sz3-bound", "bounded", "SZ3 3D (ABS = E)", "E", (0, 1, 2, 4, 8), (1, 4), _sz3_int),
    Codec("sperr-pwe", "bounded", "SPERR 3D (PWE = E)", "E", (1, 2, 4, 8), (1, 4), _sperr_pwe),
    Codec("jpegls-near", "bounded", "JPEG-LS 2D (NEAR = E)", "E", (0, 1, 2, 4, 8), (0, 4), _jpegls),
    Codec("quant-xz", "bounded", "quantise 2E+1 + xz -9e", "E", (0, 1, 2, 4, 8), (0, 4), _quant_xz),
    Codec("quant-zstd", "bounded", "quantise 2E+1 + zstd -19", "E", (0, 1, 2, 4, 8), (0, 4), _quant_zstd),
    Codec("jpeg2k-lossless", "lossless", "JPEG 2000 2D lossless (5/3)", "level", (0,), (0,), _jpeg2k_lossless),
    Codec("jpegxl-lossless", "lossless", "JPEG XL 2D lossless", "effort", (7,), (7,), _jpegxl_lossless),
]}


def sweep(name: str, vol: np.ndarray, params=None, *, quick: bool = False) -> list[Result]:
    """Run codec ``name`` on ``vol`` at each parameter (default: its full or quick sweep)."""
    codec = CODECS[name]
    vol = np.ascontiguousarray(vol)
    if params is None:
        params = codec.quick_params if quick else codec.params
    out = []
    for p in params:
        nbytes, dec, te, td = codec.run(vol, p)
        out.append(Result(name, None if p is None else float(p), int(nbytes), to_dtype(dec, vol.dtype), te, td))
    return out


def available(name: str) -> bool:
    """Whether the installed imagecodecs (or zstandard/nibabel) can run codec ``name``."""
    attr = {"sperr": "SPERR", "sz3": "SZ3", "zfp": "ZFP", "jpeg2k": "JPEG2K", "htj2k": "HTJ2K",
            "jpegxl": "JPEGXL", "jpegls": "JPEGLS", "sz3-bound": "SZ3", "sperr-pwe": "SPERR",
            "jpegls-near": "JPEGLS", "jpeg2k-lossless": "JPEG2K", "jpegxl-lossless": "JPEGXL"}.get(name)
    if attr is None:
        return name in CODECS
    try:
        ic = _ic()
    except Unsupported:
        return False
    return bool(getattr(getattr(ic, attr, None), "available", False))


__all__ = ["CODECS", "Codec", "Result", "Unsupported", "sweep", "available", "to_dtype"]
