"""Checks that need no model, run before torch is imported and before any training.

    check_volume_input("scan.nii.gz")                 # exists, readable, a format inrv reads
    check_output("out/scan.inrv", force=False, suffixes=(".inrv",))   # suffix, -f rules, folder writable

A mistake on the command line (a typo in the output folder, ``-o /proc/x.inrv``, ``-o out.xyz``, an
existing output without ``-f``) costs a second, not a training run. Every message names the path the
user gave, never a temporary file. The folder is proven writable by creating and removing a probe
file in it (permissions alone do not tell: read-only mounts, ACLs, /proc, quotas).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import InputError, UsageError
from .atomic import probe_folder
from .discovery import VOLUME_SUFFIXES as _SUFFIXES
from .io import _WRITE_ONLY_SINGLE, _sniff, _suffix

#: what an encode writes
INRV_SUFFIX = ".inrv"


def check_volume_input(path: str | os.PathLike) -> str:
    """Fail fast unless ``path`` is a readable volume inrv can read; returns its format
    (``"nifti"``, ``"nrrd"``, ``"mha"``, ``"dicom"``). Content is read later (one bad file in a
    DICOM folder is still found by the reader)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        try:
            with os.scandir(p) as it:
                next(it, None)
        except OSError as e:
            raise InputError(f"{p}: cannot read the folder: {e.strerror or e}") from None
        return "dicom"
    try:
        with open(p, "rb") as f:
            head = f.read(5)
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror or e}") from None
    if head == b"\x89INRV":
        raise UsageError(f"{p} is already an .inrv file (to restore it: inrv decode {p} -o OUT)")
    suffix = _suffix(p)
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    fmt = _sniff(p)
    if fmt is None:
        raise InputError(f"{p}: not a volume inrv can read (NIfTI .nii/.nii.gz, NRRD, MHA/MHD, DICOM)")
    return fmt


def check_output(target: str | os.PathLike, *, force: bool, suffixes: Iterable[str] | None = None,
                 folder_ok: bool = False) -> Path:
    """Fail fast unless ``target`` can be written: a known suffix (``suffixes``, lower case; None: any
    volume format, or no suffix for a DICOM folder when ``folder_ok``), not an existing output without
    ``force``, in an existing folder where a probe file can be created and removed."""
    t = Path(target)
    suffix = _suffix(t)
    if suffixes is not None:
        allowed = tuple(suffixes)
        if suffix not in allowed:
            shown = f"suffix {suffix!r}" if suffix else "no suffix"
            raise UsageError(f"{t}: the output needs the suffix {' or '.join(allowed)} ({shown} given); "
                             f"e.g. -o {t.with_suffix(allowed[0]) if suffix else t.with_name(t.name + allowed[0])}")
    else:
        if suffix in _WRITE_ONLY_SINGLE:
            raise UsageError(f"{t}: cannot write {suffix}; write {_WRITE_ONLY_SINGLE[suffix]} instead")
        if suffix and suffix not in _SUFFIXES:
            raise UsageError(f"{t}: unknown output format {suffix!r}; use .nii, .nii.gz, .nrrd, .mha, or for a "
                             "DICOM series a name without a suffix")
        if not suffix and not folder_ok:
            raise UsageError(f"{t}: the output needs a suffix (.nii.gz, .nii, .nrrd, .mha)")
    if t.is_dir() and not (folder_ok and not suffix):
        raise UsageError(f"{t} is a folder; name an output file")
    if t.exists() and not force:
        raise UsageError(f"{t} exists; use -f/--force to overwrite")
    parent = t.parent if str(t.parent) else Path(".")
    probe_folder(parent, t)
    return t
