"""Volumes in and out: one entry point for every format inrv reads and writes.

    vol = read_volume("scan.nii.gz")               # or a DICOM folder, .nrrd/.nhdr, .mha/.mhd
    write_volume(vol, "out.nrrd", force=False)     # the suffix picks the format; no suffix = DICOM folder
    arr = restore_dtype(decoded_float32, vol.intensity)

Formats (``format_for_path``): ``"nifti"`` (.nii, .nii.gz), ``"nrrd"`` (.nrrd, .nhdr), ``"mha"`` (.mha, .mhd),
``"dicom"`` (a folder, a .dcm file, or an output path without a suffix). See ``docs/formats.md``.
Every error a user can cause is an ``InputError`` (unreadable input) or ``UsageError`` (bad output path,
existing output without ``force``), each with a one-line message. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, InrvError, RunError, UsageError
from .atomic import atomic_output
from .dicom import looks_like_dicom_head
from .discovery import VOLUME_SUFFIXES, has_dicom_preamble, looks_like_dicom, volume_suffix
from .volume import SUPPORTED_DTYPES, Intensity, Volume

_WRITE_ONLY_SINGLE = {".nhdr": ".nrrd", ".mhd": ".mha", ".dcm": "a folder"}


def _suffix(path: Path) -> str:
    return volume_suffix(path.name) or path.suffix.lower()


def format_for_path(path: str | os.PathLike) -> str:
    """The format a path names: ``"nifti"``, ``"nrrd"``, ``"mha"`` or ``"dicom"``.

    An existing folder, a ``.dcm`` file or a name without a suffix is DICOM; an unknown suffix raises
    ``UsageError``."""
    p = Path(path)
    if p.is_dir():
        return "dicom"
    suffix = _suffix(p)
    if suffix in VOLUME_SUFFIXES:
        return VOLUME_SUFFIXES[suffix]
    if suffix == "":
        return "dicom"
    raise UsageError(f"{p}: unknown format {suffix!r}; use .nii, .nii.gz, .nrrd, .mha, or for a DICOM series "
                     "a name without a suffix or an existing folder")


def _sniff(path: Path) -> str | None:
    """Guess the format of a file with an unknown or missing suffix from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(544)
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from None
    if has_dicom_preamble(head) or looks_like_dicom_head(head):
        return "dicom"
    if head[:2] == b"\x1f\x8b":
        return None  # gzip of something: only trusted with a .nii.gz name
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head[:4] == b"NRRD":
        return "nrrd"
    return None


def read_volume(path: str | os.PathLike, *, keep_private: bool = False, series: str | int | None = None) -> Volume:
    """Read a 3D volume: NIfTI file, DICOM series folder (or one of its files), NRRD or MetaImage.

    ``Volume.data`` holds the stored values in their original dtype, (x, y, z) index order; geometry is
    LPS. ``keep_private=True`` keeps identifying free text / tags (NIfTI ``descrip``..., DICOM patient and
    study tags) that are otherwise blanked or dropped. ``series`` picks one DICOM series of a folder that holds
    several (1-based index or SeriesInstanceUID; ``inrv info FOLDER`` lists them)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    try:
        fmt = format_for_path(p)
    except UsageError:
        fmt = None
    if p.is_file() and (fmt is None or (fmt == "dicom" and _suffix(p) == "")):
        fmt = _sniff(p)
        if fmt is None:
            raise InputError(f"{p}: not a volume inrv can read (NIfTI, DICOM, NRRD, MHA)")
    # imported outside the try: a broken install must not look like a bad input file
    from .dicom import read_dicom
    from .nifti import read_nifti
    from .sitk_io import read_sitk

    try:
        if fmt == "nifti":
            vol = read_nifti(p, keep_private=keep_private)
        elif fmt == "dicom":
            vol = read_dicom(p, keep_private=keep_private, series=series)
        else:
            vol = read_sitk(p, fmt)
    except InrvError:
        raise
    except MemoryError:
        raise RunError(f"{p}: not enough memory to read this volume") from None
    except Exception as e:  # any library error we did not anticipate: still one line, still InputError
        raise InputError(f"{p}: cannot read: {' '.join(str(e).split())[:200] or type(e).__name__}") from None
    _check_volume(vol, str(p))
    return vol


def _check_volume(vol: Volume, what: str) -> None:
    if vol.data.ndim != 3:
        raise InputError(f"{what}: expected a 3D volume, got shape {tuple(vol.data.shape)}")
    if vol.data.dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"{what}: voxel type {vol.data.dtype.name} is not supported "
                         f"(supported: {', '.join(SUPPORTED_DTYPES)})")


def write_volume(volume: Volume, path: str | os.PathLike, *, force: bool = False) -> None:
    """Write ``volume`` to ``path``; the format follows the name (``format_for_path``).

    Writes are atomic (a temporary file/folder renamed into place); an existing target raises
    ``UsageError`` unless ``force``."""
    p = Path(path)
    fmt = format_for_path(p)
    suffix = _suffix(p)
    if suffix in _WRITE_ONLY_SINGLE:
        raise UsageError(f"{p}: cannot write {suffix}; write {_WRITE_ONLY_SINGLE[suffix]} instead")
    if p.exists() and fmt == "dicom":
        if not p.is_dir():
            raise UsageError(f"{p} exists and is a file; a DICOM series is written as a folder")
        if force and not _is_dicom_folder(p):
            raise UsageError(f"{p} holds other things than DICOM files; refusing to replace it even with --force")
    _check_volume(volume, "volume")
    if fmt == "nifti":
        from .nifti import write_nifti as writer
    elif fmt == "dicom":
        from .dicom import write_dicom as writer
    else:
        from .sitk_io import write_sitk

        def writer(v: Volume, target: Path) -> None:
            write_sitk(v, target, fmt)
    with atomic_output(p, force=force, folder=(fmt == "dicom")) as tmp:
        try:
            writer(volume, tmp)
        except InrvError:
            raise
        except OSError:
            raise
        except Exception as e:
            raise RunError(f"cannot write {p}: {' '.join(str(e).split())[:200]}") from None


def _is_dicom_folder(folder: Path) -> bool:
    """True when every entry is a plain file that looks like DICOM (an empty folder counts): ``force``
    replaces a DICOM output folder whole, and must never wipe a folder of something else."""
    for entry in folder.iterdir():
        if not entry.is_file() or entry.is_symlink():
            return False
        if not looks_like_dicom(entry):
            return False
    return True


def restore_dtype(array: np.ndarray, intensity: Intensity) -> np.ndarray:
    """Cast a decoded float array back to the stored dtype of ``intensity``.

    Integer dtypes: ``np.rint``, then clip to the stored range ``[min, max]`` (``intensity.min/max``,
    intersected with the dtype's range), then cast; NaN becomes the clipped 0, +/-inf the bounds.
    Clipping to ``[min, max]`` never moves a voxel away from its true value (every true value lies in
    that range) and keeps e.g. a CT's air at -1024 rather than below it. Float dtypes: clipped to
    ``[min, max]`` as well (NaN stays NaN), then cast."""
    name = intensity.dtype
    if name not in SUPPORTED_DTYPES:
        raise InputError(f"cannot restore voxel type {name!r} (supported: {', '.join(SUPPORTED_DTYPES)})")
    dt = np.dtype(name)
    a = np.asarray(array)
    lo_v, hi_v = float(intensity.min), float(intensity.max)
    have_range = np.isfinite(lo_v) and np.isfinite(hi_v) and lo_v <= hi_v
    if dt.kind == "f":
        work = a.astype(dt, copy=True)
        if have_range:
            np.clip(work, dt.type(lo_v), dt.type(hi_v), out=work)
        return work
    info = np.iinfo(dt)
    lo, hi = float(info.min), float(info.max)
    if have_range:
        lo, hi = max(lo, float(np.ceil(lo_v))), min(hi, float(np.floor(hi_v)))
        if lo > hi:  # degenerate range (e.g. [0.2, 0.8] for an integer dtype): fall back to the dtype's
            lo, hi = float(info.min), float(info.max)
    # float32 holds every integer of the 8/16-bit dtypes exactly; 32-bit ones need float64
    work_t = np.float64 if dt.itemsize >= 4 else np.float32
    work = a.astype(work_t, copy=True)
    zero = min(max(0.0, lo), hi)
    np.nan_to_num(work, copy=False, nan=zero, posinf=hi, neginf=lo)
    np.rint(work, out=work)
    np.clip(work, lo, hi, out=work)
    return work.astype(dt)


__all__ = ["read_volume", "write_volume", "restore_dtype", "format_for_path"]
