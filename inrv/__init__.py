"""inrv: a neural codec for 3D medical images.

The public API, a few lines each over ``inrv.formats`` (files) and ``inrv.codec`` (models)::

    import inrv
    vol = inrv.load("scan.nii.gz")                  # Volume: voxels + geometry + intensity facts
    enc = inrv.encode(vol, "paper", steps=2000)     # Encoded: model id, config, byte sections
    arr = inrv.decode(enc)                          # float32 array in the original units
    s = inrv.compress("scan.nii.gz", "scan.inrv")   # file -> .inrv, returns a Summary (s.bpv, s.psnr ...)
    vol = inrv.restore("scan.inrv")                 # .inrv -> Volume in memory, original dtype and geometry
    inrv.decompress("scan.inrv", "out.nii.gz")      # .inrv -> file, the same Volume written out
    inrv.info("scan.inrv")                          # Summary: header facts, bits per voxel from the file size

``Summary`` (``inrv/summary.py``) is the fixed schema of what ``compress`` and ``info`` return: typed
fields (``bpv``, ``psnr``, ``file_bytes`` ...) plus ``to_dict()``, the ``inrv info --json`` document.

torch is imported only when a model is fitted or rendered.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from .codec.base import get_model
from .encoded import Encoded, Progress, list_models
from .codec.config import PRESETS, LatentConfig, PaperConfig, make_config
from .errors import (ChecksumError, DeviceError, FormatError, InputError, InrvError, LimitError, RunError,
                     UnsupportedVersionError, UsageError)
from .formats.volume import Geometry, Intensity, Volume
from .summary import Summary

__version__ = "0.1.0"

__all__ = [
    "encode", "decode", "load", "save", "compress", "decompress", "restore", "read", "info", "Summary",
    "Encoded", "Volume", "Geometry", "Intensity", "PaperConfig", "LatentConfig", "PRESETS", "make_config",
    "list_models", "InrvError", "InputError", "FormatError", "ChecksumError", "UnsupportedVersionError",
    "LimitError", "UsageError", "DeviceError", "RunError", "__version__",
]


def encode(data: Volume | np.ndarray, config: Any = None, *, device: str | None = None,
           progress: Progress | None = None, file_bytes: Callable[[Encoded], int] | None = None,
           **overrides: Any) -> Encoded:
    """Fit a model to a 3D volume. ``config``: a preset name, a config object or None (default preset);
    ``overrides`` replace config fields (e.g. ``steps=200, ds=4``). ``file_bytes``: the size of the file
    an Encoded will be written as; a ``target_bpv`` search then aims at that size (:func:`compress`
    passes the ``.inrv`` container's) instead of the model's own bytes."""
    array = data.data if isinstance(data, Volume) else np.asarray(data)
    if array.ndim != 3:
        raise InputError(f"expected a 3D volume, got {array.ndim} dimensions {tuple(array.shape)}")
    if config is None and overrides.get("max_error") is not None:
        config = "lossless"           # a bound alone picks the nearlossless coder
    cfg = make_config(config, **overrides)
    extra = {"file_bytes": file_bytes} if file_bytes is not None else {}
    return get_model(cfg.model).fit(array, cfg, device=device, progress=progress, **extra)


def decode(encoded: Encoded, shape: tuple[int, int, int] | None = None, *, device: str | None = None) -> np.ndarray:
    """Render an encoded volume as float32 in the original units, on its own grid or at ``shape``."""
    return get_model(encoded.model).render(encoded, shape=shape, device=device)


def load(path: str | os.PathLike, *, keep_private: bool = False, series: str | int | None = None) -> Volume:
    """Read a NIfTI file, a DICOM series folder, an NRRD or an MHA file."""
    from .formats.io import read_volume

    return read_volume(path, keep_private=keep_private, series=series)


def save(volume: Volume, path: str | os.PathLike, *, force: bool = False) -> None:
    """Write a volume; the format follows the suffix (a path without suffix = DICOM folder)."""
    from .formats.io import write_volume

    write_volume(volume, path, force=force)


def read(path: str | os.PathLike):
    """Open an ``.inrv`` file (validated, checksummed): returns an ``InrvFile``
    (``.encoded``, ``.geometry``, ``.intensity``, ``.source``, ``.header``, ``.file_bytes``)."""
    from .codec.schema import validate_config
    from .formats.inrvfile import read_inrv

    return read_inrv(path, check_config=validate_config)


def info(path: str | os.PathLike) -> Summary:
    """What ``inrv info`` shows: header facts, sizes, encode-time metrics, bits per voxel from the real
    file size (checksums verified, the model configuration validated, nothing decoded, no torch).
    ``info(p).to_dict()`` is ``inrv info --json``."""
    from .codec.schema import validate_config
    from .formats.inrvfile import inrv_info

    return Summary.from_info(inrv_info(path, check_config=validate_config))


def compress(src: str | os.PathLike, dst: str | os.PathLike, config: Any = None, *, device: str | None = None,
             progress: Progress | None = None, force: bool = False, keep_private: bool = False,
             series: str | int | None = None, best_coder: bool = True, **overrides: Any) -> Summary:
    """Encode a volume file into an ``.inrv`` file; returns its :class:`Summary` (``seconds``: load + fit).

    Two rules choose the file written (both recorded as ``fallback: <family asked for>`` in its config):
    a file is never larger than the lossless encoding of integer voxels, and with a ``target_bpv`` /
    ``target_psnr`` the near-lossless coder is tried at the bound that meets the target and written
    where it is better there (``best_coder=False``: keep the model asked for; the first rule still
    applies). Where it beats what the rate model expects of the neural fit by a wide margin, the
    neural fit is not run at all (docs/cli.md, "The best coder for a target")."""
    from .formats.atomic import check_writable
    from .formats.inrvfile import inrv_info, write_inrv

    check_writable(dst, force)  # fail before training, not after
    t0 = time.perf_counter()
    vol = load(src, keep_private=keep_private, series=series)
    enc = _encode_for_file(vol, make_config(config, **overrides), device=device, progress=progress,
                           best_coder=best_coder)
    seconds = time.perf_counter() - t0
    enc.stats["encode_seconds"] = seconds
    write_inrv(dst, enc, vol, force=force)
    return Summary.from_info(inrv_info(dst), seconds=seconds)


def _encode_for_file(vol: Volume, cfg: Any, *, device: str | None = None, progress: Progress | None = None,
                     best_coder: bool = True, with_ssim: bool = True) -> Encoded:
    """The encoding of ``vol`` that :func:`compress` writes (and ``inrv.numcodecs`` stores per chunk): the
    fit ``cfg`` asks for, or the lossless or near-lossless file that the two rules of :func:`compress`
    choose instead; its stats hold the quality of the restored voxels."""
    from .formats.inrvfile import to_bytes

    # the lossless file first (seconds, no training): a time budget then counts it, and a --bpv target
    # at or above its rate is met by it without training at all
    t1 = time.perf_counter()
    lossless = _lossless_alternative(vol, cfg, with_ssim=with_ssim)
    lossless_bytes = len(to_bytes(lossless, vol)) if lossless is not None else None
    target = getattr(cfg, "target_bpv", None)
    target_psnr = getattr(cfg, "target_psnr", None)
    # a --bpv search measures the real file (the container's header is ~20 % of a tiny file)
    sized = _file_bytes_of(vol) if target is not None or target_psnr is not None else None
    if lossless is not None and target is not None and 8.0 * lossless_bytes / vol.data.size <= float(target):
        return lossless
    rival = skip = None
    if best_coder and sized is not None and getattr(cfg, "model", None) != "nearlossless":
        rival, skip = _near_lossless_rival(vol, cfg, sized, lossless_bytes, t1, with_ssim=with_ssim)
    if skip:
        enc = rival
    else:
        if getattr(cfg, "time_budget", None):
            spent = time.perf_counter() - t1
            cfg = replace(cfg, time_budget=max(0.25 * cfg.time_budget, cfg.time_budget - spent))
        enc = _fitted(vol, cfg, device=device, progress=progress, file_bytes=sized, with_ssim=with_ssim)
        if rival is not None and (rival.stats["psnr"] >= enc.stats["psnr"] if target is not None
                                  else sized(rival) <= sized(enc)):
            enc = rival
    if lossless is not None and lossless_bytes < len(to_bytes(enc, vol)):
        enc = lossless          # no option makes a file larger than lossless
    return enc


def _fitted(vol: Volume, cfg: Any, *, with_ssim: bool = True, **kw: Any) -> Encoded:
    """:func:`encode`, with the quality of the restored voxels in its stats."""
    from .codec.metrics import quality
    from .formats.io import restore_dtype

    enc = encode(vol, cfg, **kw)
    # the model decoded itself while fitting: reuse that reconstruction rather than decoding again
    recon = enc.reconstruction if enc.reconstruction is not None else decode(enc, device=kw.get("device"))
    enc.reconstruction = None
    restored = restore_dtype(recon, vol.intensity)
    del recon
    enc.stats.update(quality(vol.data, restored, with_ssim=with_ssim))
    return enc


# the near-lossless coder against the neural fit, for a target: it replaces the fit without running it
# where it beats what the rate model expects of the fit by this much (measured fits land within 2 dB
# of it; docs/cli.md), and the search for its bound stops where it cannot come within the second margin
RIVAL_SKIP_DB, RIVAL_HOPELESS_DB = 2.5, 4.0
RIVAL_SKIP_RATE, RIVAL_HOPELESS_RATE = 0.65, 1.5
RIVAL_BUDGET_SHARE = 0.3        # of a time budget, at most, for the search of the bound
HEADER_SLACK = 32               # bytes
DB_PER_OCTAVE = 6.0             # the near-lossless coder's PSNR per doubling of its rate (mni_t1, mni_patch64)


def _near_lossless_rival(vol: Volume, cfg: Any, sized: Callable[[Encoded], int], lossless_bytes: int | None,
                         t1: float, *, with_ssim: bool = True) -> tuple[Encoded | None, bool]:
    """The near-lossless file that meets ``cfg``'s target (None where none does or it cannot compete),
    and whether it is so far ahead of the rate model's expectation of a neural fit that the fit is not
    worth running."""
    from .codec.latent.ratemodel import predict
    from .codec.metrics import quality
    from .codec.nearlossless.target import encode_to_target
    from .formats.io import restore_dtype

    n = vol.data.size
    bpv, psnr = getattr(cfg, "target_bpv", None), getattr(cfg, "target_psnr", None)
    expected = predict(vol.data, bpv=bpv, psnr=psnr)
    if expected is None:
        return None, False

    # a trial's measure moved to the target along the coder's typical slope (a trial that meets the
    # target keeps its own): no bound does better than that of a trial that missed the target
    if bpv is not None:
        def at_target(t):          # PSNR
            return t.psnr - DB_PER_OCTAVE * math.log2(max(t.bpv / bpv, 1.0))

        def hopeless(t):
            return at_target(t) < expected - RIVAL_HOPELESS_DB

        def ahead(t):
            return at_target(t) >= expected + RIVAL_SKIP_DB
    else:
        def at_target(t):          # bits per voxel
            return t.bpv * 2.0 ** (max(psnr - t.psnr, 0.0) / DB_PER_OCTAVE)

        def hopeless(t):
            return at_target(t) > expected * RIVAL_HOPELESS_RATE

        def ahead(t):
            return at_target(t) <= expected * RIVAL_SKIP_RATE
    budget = getattr(cfg, "time_budget", None)
    # a share of a time budget; most of it where the latest trial shows that the file found will be so
    # far ahead that the fit will not run (a whole brain under a one-minute budget)
    deadline = (lambda t: t1 + (0.9 if ahead(t) else RIVAL_BUDGET_SHARE) * budget) if budget else None
    # the header of the file written holds the final metrics, which compress to a few bytes more or less
    # than ``sized`` counts: a margin keeps a --bpv target a bound
    size = lambda e: sized(e) + HEADER_SLACK      # noqa: E731
    best, _ = encode_to_target(vol.data, bpv=bpv, psnr=psnr, file_bytes=size, hopeless=hopeless, deadline=deadline,
                               lossless_bpv=8.0 * lossless_bytes / n if lossless_bytes else None)
    if best is None:
        return None, False
    if vol.data.dtype.kind in "iu" and not hopeless(best) and (deadline is None or time.perf_counter()
                                                              + best.seconds < deadline(best)):
        # the smaller of the coder's two binnings at a bound is not the better one at a rate: in-loop bins
        # let a zero background drift by up to E, a fixed grid keeps it exact (mni_t1 at E = 2: 8 % more
        # bytes, +3.2 dB); so the grid alone too, at the bound that meets the target, where it can still
        # be better (the search above, on the smaller of the two at each bound, also misses it where that
        # minimum is not monotone in the bound, as on tiny volumes)
        def beaten(t):
            return t.psnr <= best.psnr if bpv is not None else t.bpv >= best.bpv
        grid, _ = encode_to_target(vol.data, bpv=bpv, psnr=psnr, file_bytes=size, hopeless=beaten, deadline=deadline,
                                   binning="grid", first_bound=best.max_error)
        if grid is not None and not beaten(grid):
            best = grid
    rival = best.enc
    rival.config["fallback"] = getattr(cfg, "model", None)
    rival.stats.update(quality(vol.data, restore_dtype(decode(rival), vol.intensity), with_ssim=with_ssim))
    return rival, ahead(best)


def _lossless_alternative(vol: Volume, cfg: Any, *, with_ssim: bool = True) -> Encoded | None:
    """The lossless encoding of integer voxels, stored instead of the encoding ``cfg`` asks for where
    that would be larger (its config then says ``fallback: <family of cfg>``); None for float voxels
    and where ``cfg`` is lossless itself."""
    from .codec.metrics import quality

    family = getattr(cfg, "model", None)
    if vol.data.dtype.kind not in "iu" or (family == "nearlossless" and float(cfg.max_error) == 0):
        return None
    alt = encode(vol, "lossless")
    alt.config["fallback"] = family
    alt.reconstruction = None
    alt.stats.update(quality(vol.data, vol.data, with_ssim=with_ssim))
    return alt


def restore(src: str | os.PathLike, *, shape: tuple[int, int, int] | None = None,
            device: str | None = None) -> Volume:
    """Decode an ``.inrv`` file into memory: a :class:`Volume` with the original dtype, geometry and
    intensity facts (what :func:`decompress` writes). ``shape`` renders another grid over the same field
    of view (the geometry follows: spacing scaled, origin moved to the new first voxel centre)."""
    from .formats.container import DEFAULT_LIMITS
    from .formats.io import restore_dtype

    f = read(src)
    if shape is not None:
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or min(shape) < 1 or int(np.prod(shape)) > DEFAULT_LIMITS.max_voxels:
            raise UsageError(f"output shape {shape} must be 3 positive sizes with at most "
                             f"{DEFAULT_LIMITS.max_voxels} voxels")
    from .codec.schema import check_decode_memory

    check_decode_memory(shape or f.shape, np.dtype(f.intensity.dtype).itemsize, str(src))
    data = restore_dtype(decode(f.encoded, shape=shape, device=device), f.intensity)
    geometry = f.geometry
    if shape is not None and tuple(shape) != tuple(f.encoded.shape):
        geometry = _resampled_geometry(geometry, f.encoded.shape, shape)
    # DICOM output marks the series lossy with the ratio of raw bytes to the .inrv file's bytes
    source = dict(f.source)
    raw_bytes = int(np.prod(f.encoded.shape)) * np.dtype(f.intensity.dtype).itemsize
    source["lossy"] = {"lossy_ratio": raw_bytes / max(1, f.file_bytes)}
    return Volume(data=data, geometry=geometry, intensity=f.intensity, source=source)


def decompress(src: str | os.PathLike, dst: str | os.PathLike, *, shape: tuple[int, int, int] | None = None,
               device: str | None = None, force: bool = False) -> Volume:
    """Decode an ``.inrv`` file into a volume file with the original dtype and geometry
    (:func:`restore`, then :func:`save`); returns the volume written."""
    from .formats.atomic import check_writable

    check_writable(dst, force)
    vol = restore(src, shape=shape, device=device)
    save(vol, dst, force=force)
    return vol


def _file_bytes_of(vol: Volume) -> Callable[[Encoded], int]:
    """The size of the ``.inrv`` file an Encoded of ``vol`` becomes (container included), for the
    codec's ``--bpv`` search; the metrics ``compress`` adds after the fit are counted with typical values."""
    from .formats.inrvfile import to_bytes

    later = {"ssim": 0.987654321, "max_abs_err": 12.345678, "data_range": 1234.5678, "encode_seconds": 12.345678}

    def file_bytes(enc: Encoded) -> int:
        return len(to_bytes(replace(enc, stats={**later, **enc.stats}, reconstruction=None), vol))
    return file_bytes


def _resampled_geometry(g: Geometry, old: tuple[int, ...], new: tuple[int, ...]) -> Geometry:
    """Geometry of the same field of view sampled on ``new`` voxels (cell-centred)."""
    d = np.asarray(g.direction, dtype=np.float64).reshape(3, 3)
    old_sp = np.asarray(g.spacing, dtype=np.float64)
    new_sp = old_sp * np.asarray(old, dtype=np.float64) / np.asarray(new, dtype=np.float64)
    # the first new voxel centre sits half a new voxel inside the old field of view's corner
    corner = np.asarray(g.origin) - d @ (old_sp / 2)
    origin = corner + d @ (new_sp / 2)
    return Geometry(tuple(new_sp.tolist()), tuple(origin.tolist()), tuple(g.direction))
