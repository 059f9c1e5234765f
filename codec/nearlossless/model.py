"""The ``nearlossless`` model class (fit/render); the package docstring describes the family."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ...encoded import Encoded, Progress
from .config import NearLosslessConfig  # noqa: F401  (re-exported)

PAYLOAD_VERSION = 2          # 1: interpolation predictor; 2: + edge-preserving smoothing (th, kd)
READABLE_VERSIONS = (1, 2)
MAX_INDEX = 1 << 50          # float data: grid indices beyond this cannot be coded exactly


def _stats(x: np.ndarray, rec: np.ndarray, bound: float, t0: float) -> dict[str, Any]:
    err = float(np.max(np.abs(rec - x.astype(np.float64)))) if x.size else 0.0
    return {"max_abs_err": err, "max_error_bound": float(bound), "encode_seconds": time.perf_counter() - t0,
            "device": "cpu", "steps": 0}


class NearLosslessModel:
    name = "nearlossless"

    def fit(self, data: np.ndarray, config: Any, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded:
        from ...errors import InputError
        from . import coder

        t0 = time.perf_counter()
        x = np.asarray(data)
        if x.ndim != 3 or x.size == 0:
            raise InputError(f"expected a non-empty 3D volume, got shape {tuple(x.shape)}")
        E = float(getattr(config, "max_error", 0.0) or 0.0)
        if not math.isfinite(E) or E < 0:
            raise InputError(f"the maximum error must be a finite number >= 0, not {E}")
        predictor = str(getattr(config, "predictor", "auto") or "auto")
        if predictor not in coder.PREDICTORS:
            raise InputError(f"unknown nearlossless predictor {predictor!r}; one of {', '.join(coder.PREDICTORS)}")
        binning = str(getattr(config, "binning", "auto") or "auto")
        if binning not in coder.BINNINGS:
            raise InputError(f"unknown nearlossless binning {binning!r}; one of {', '.join(coder.BINNINGS)}")
        cfg: dict[str, Any] = {"model": self.name, "max_error": E, "v": PAYLOAD_VERSION}
        if x.dtype.kind in "iub":
            xi = x.astype(np.int64)
            params, sections, R = coder.encode(xi, int(math.floor(E)), PAYLOAD_VERSION, predictor, binning)
            rec = R.astype(np.float64)
        elif x.dtype.kind == "f":
            if E == 0:
                raise InputError(f"lossless coding of {x.dtype} voxels is not supported; give a maximum "
                                 "error > 0 (--max-error E)")
            if not np.all(np.isfinite(x)):
                raise InputError("the volume has NaN or infinite voxels; near-lossless coding needs finite values")
            params, sections, rec = self._fit_float(x, E, predictor)
        else:
            raise InputError(f"cannot code voxels of type {x.dtype}")
        cfg.update(params)
        lo, hi = float(np.min(x)), float(np.max(x))
        enc = Encoded(model=self.name, config=cfg, sections=sections, shape=tuple(int(s) for s in x.shape),
                      value_range=(lo, hi))
        # verify on the decoder's own output (the bound is a promise)
        dec = self.render(enc)
        if x.dtype.kind == "f":
            dec = dec.astype(x.dtype).astype(np.float64)     # what restoring the dtype gives
        if not np.array_equal(dec, rec):
            raise RuntimeError("nearlossless: the decoder disagrees with the encoder (bug)")
        err = float(np.max(np.abs(dec - x.astype(np.float64))))
        if err > E:
            raise RuntimeError(f"nearlossless: max error {err} exceeds the bound {E} (bug)")
        enc.stats = _stats(x, dec, E, t0)
        enc.reconstruction = dec
        if progress is not None:
            progress(1, 1, {})
        return enc

    def _fit_float(self, x: np.ndarray, E: float, predictor: str = "auto"):
        """Grid indices ``rint(x / step)`` coded losslessly; the step shrinks until the restored float
        values (cast to ``x.dtype``) are within ``E``."""
        from ...errors import InputError
        from . import coder

        xf = x.astype(np.float64)
        step = 2.0 * E
        for _ in range(8):
            step *= 1.0 - 2.0 ** -20
            if np.max(np.abs(xf)) / step > MAX_INDEX:
                raise InputError(f"the maximum error {E} is too small for values up to {np.max(np.abs(xf)):g}")
            idx = np.rint(xf / step).astype(np.int64)
            rec = (idx.astype(np.float64) * step).astype(x.dtype).astype(np.float64)
            if np.max(np.abs(rec - xf)) <= E:
                params, sections, R = coder.encode(idx, 0, PAYLOAD_VERSION, predictor)
                params["step"] = step
                return params, sections, rec
        raise InputError(f"cannot meet the maximum error {E} in {x.dtype} arithmetic")

    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray:
        from ...errors import FormatError, InputError, UnsupportedVersionError
        from . import coder

        c = encoded.config
        v = c.get("v")
        if v not in READABLE_VERSIONS or isinstance(v, bool):
            raise UnsupportedVersionError(f"nearlossless payload version {v!r} is unknown to this inrv; upgrade")
        if (v >= 2) != ("th" in c and "kd" in c) or (v < 2 and ("th" in c or "kd" in c)):
            raise FormatError(f"corrupt nearlossless payload: smoothing parameters do not match version {v}")
        try:
            R = coder.decode(tuple(encoded.shape), c, encoded.sections)
        except MemoryError:
            raise
        except BaseException as e:   # constriction reports a bad stream with AssertionError/ValueError,
            from ..schema import is_library_panic    # or a Rust panic (a BaseException)

            if not (isinstance(e, Exception) or is_library_panic(e)) or isinstance(e, KeyboardInterrupt):
                raise
            raise FormatError(f"corrupt nearlossless payload: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                              ) from None
        out = R.astype(np.float64)
        if "step" in c:
            out *= float(c["step"])
        if shape is not None and tuple(shape) != tuple(encoded.shape):
            # another grid over the same field of view (cell-centred): trilinear resampling; the bound
            # holds on the file's own grid only
            from scipy import ndimage

            if len(shape) != 3 or min(shape) < 1:
                raise InputError(f"bad output shape {tuple(shape)}")
            zoom = [n / o for n, o in zip(shape, encoded.shape)]
            out = ndimage.zoom(out, zoom, order=1, mode="nearest", grid_mode=True)
        return out
