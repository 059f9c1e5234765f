"""inrv as a `numcodecs <https://numcodecs.readthedocs.io>`_ codec, for chunked arrays in zarr.

Each 3D chunk becomes one complete ``.inrv`` file (header + model + payload), so a chunk decodes on its
own and ``inrv info`` can describe it::

    import numcodecs, numpy as np
    from inrv.numcodecs import Inrv

    codec = Inrv(preset="fast", bpv=0.5)          # or psnr=45, or max_error=2 (guaranteed bound)
    buf = codec.encode(volume_chunk)              # bytes of a .inrv file
    back = codec.decode(buf)                      # same shape and dtype as the chunk
    numcodecs.get_codec(codec.get_config())       # found by id "inrv" (entry point numcodecs.codecs)

With zarr 3 (``pip install "inrv[zarr]"``), the codec is the array's *serializer* (array -> bytes) through
the ``zarr-any-numcodecs`` adapter::

    import zarr
    from zarr_any_numcodecs import AnyNumcodecsArrayBytesCodec
    z = zarr.create_array("scan.zarr", shape=vol.shape, chunks=(128, 128, 128), dtype=vol.dtype,
                          serializer=AnyNumcodecsArrayBytesCodec(Inrv(preset="fast")), compressors=None)
    z[:] = vol

Chunk sizes: every chunk carries its own header (about 0.1-0.3 kB) and its own fitted networks (one to a few
kB), so small chunks cost rate; the benchmark ``benchmarks/chunking.py`` measures the cost against one
whole-volume encode. Prefer chunks of 64^3 voxels or more (128^3 or the whole volume when reads are
whole-volume anyway); encoding trains a network per chunk, so the encode time grows with the chunk count too.

A chunk is coded as ``inrv encode`` would code it (:func:`inrv.compress`'s two rules): never larger than the
lossless file of its integer voxels (label maps, masks and empty chunks cost what a lossless coder costs),
and with ``bpv``/``psnr`` the better of the neural and the near-lossless file at the target.

Only the options in :meth:`Inrv.get_config` are stored in the array metadata; ``device`` is a property of
the machine, not of the data, and is never stored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ndarray_copy

__all__ = ["Inrv"]


class Inrv(Codec):
    """Encode a 3D chunk into the bytes of an ``.inrv`` file and back.

    Args:
        preset: the named configuration (``inrv.PRESETS``), e.g. ``"fast"``, ``"balanced"``, ``"paper"``.
        bpv: latent model: search the rate weight for this many bits per voxel (rate target).
        psnr: latent model: search the rate weight for this PSNR in dB (quality target).
        max_error: a guaranteed maximum absolute error in stored units (0: lossless), coded by the
            ``nearlossless`` family; replaces ``preset``. An :class:`~inrv.errors.UsageError` when the
            installed inrv has no such family.
        steps: training steps (default: the preset's).
        seed: random seed (default: the preset's, 0: reproducible).
        options: other config field overrides of the preset (plain JSON values), e.g. ``{"levels": 5}``.
        device: where to fit and render (``None``: CUDA when present, else CPU). Not stored.
    """

    codec_id = "inrv"

    def __init__(self, preset: str = "fast", bpv: float | None = None, psnr: float | None = None,
                 max_error: float | None = None, steps: int | None = None, seed: int | None = None,
                 options: dict[str, Any] | None = None, device: str | None = None) -> None:
        self.preset = preset
        self.bpv = None if bpv is None else float(bpv)
        self.psnr = None if psnr is None else float(psnr)
        self.max_error = None if max_error is None else float(max_error)
        self.steps = None if steps is None else int(steps)
        self.seed = None if seed is None else int(seed)
        self.options = dict(options) if options else None
        self.device = device
        self.config()  # a bad option fails here, not on the first chunk

    # ------------------------------------------------------------------ configuration

    def get_config(self) -> dict[str, Any]:
        """The codec's JSON-able configuration (what zarr stores); ``device`` is left out."""
        cfg: dict[str, Any] = {"id": self.codec_id, "preset": self.preset}
        for key in ("bpv", "psnr", "max_error", "steps", "seed", "options"):
            value = getattr(self, key)
            if value is not None:
                cfg[key] = value
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Inrv":
        """The codec of a :meth:`get_config` dict (the ``id`` key is optional)."""
        return cls(**{k: v for k, v in config.items() if k != "id"})

    def config(self):
        """The inrv config object this codec encodes with (:func:`inrv.make_config`)."""
        from . import PRESETS, make_config
        from .errors import UsageError

        overrides: dict[str, Any] = dict(self.options or {})
        if self.steps is not None:
            overrides["steps"] = self.steps
        if self.seed is not None:
            overrides["seed"] = self.seed
        if self.max_error is not None:
            if self.bpv is not None or self.psnr is not None:
                raise UsageError("give max_error, or bpv/psnr, not both")
            if self.max_error < 0:
                raise UsageError(f"max_error must be >= 0, got {self.max_error}")
            base = next((p for p in PRESETS.values() if getattr(p, "model", None) == "nearlossless"), None)
            if base is None:
                raise UsageError("max_error needs the nearlossless model family, which this inrv does not have")
            names = {f.name for f in dataclasses.fields(base)}
            return make_config(base, max_error=self.max_error,
                               **{k: v for k, v in overrides.items() if k in names})
        if self.bpv is not None and self.psnr is not None:
            raise UsageError("give bpv or psnr, not both")
        if self.bpv is not None:
            overrides["target_bpv"] = self.bpv
        if self.psnr is not None:
            overrides["target_psnr"] = self.psnr
        return make_config(self.preset, **overrides)

    # ------------------------------------------------------------------ codec

    def encode(self, buf: Any) -> bytes:
        """A 3D array (any supported dtype) -> the bytes of an ``.inrv`` file."""
        from . import _encode_for_file
        from .errors import InputError
        from .formats.inrvfile import to_bytes
        from .formats.volume import SUPPORTED_DTYPES, Volume

        arr = np.asarray(buf)
        if arr.ndim != 3:
            raise InputError(f"inrv encodes 3D chunks; got {arr.ndim} dimensions {arr.shape} "
                             "(choose 3D chunks, e.g. chunks=(1, 128, 128, 128) -> a 3D array per chunk)")
        if arr.dtype.name not in SUPPORTED_DTYPES:
            raise InputError(f"unsupported dtype {arr.dtype} (supported: {', '.join(SUPPORTED_DTYPES)})")
        arr = np.ascontiguousarray(arr)
        volume = Volume(arr)
        # what `inrv encode` would write for this chunk: never larger than lossless, and a bpv/psnr target
        # met by the better of the neural and near-lossless files (PSNR and max error in the header)
        enc = _encode_for_file(volume, self.config(), device=self.device, with_ssim=False)
        return to_bytes(enc, volume)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        """The bytes of an ``.inrv`` file -> the array, in its original shape and dtype."""
        from . import restore

        arr = restore(ensure_bytes(buf), device=self.device).data
        return ndarray_copy(arr, out) if out is not None else arr

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"{type(self).__name__}({args})"
