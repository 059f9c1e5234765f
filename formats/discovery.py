"""Which files are volumes: the one table of volume suffixes, the one DICOM sniffer, and a folder walk.

Every caller that needs to know "is this path a volume, and of which format" asks here:
``formats/io.py`` (reading and writing), the ``inrv`` commands (default output names) and
``inrv batch`` (finding the inputs of an archive).

* :data:`VOLUME_SUFFIXES`: suffix -> format (``"nifti"``, ``"nrrd"``, ``"mha"``, ``"dicom"``), longest
  first, so ``scan.nii.gz`` is ``.nii.gz`` and not ``.gz``.
* :func:`looks_like_dicom`: a ``.dcm``/``.ima``/``.dicom`` name, or first bytes that are DICOM (the byte
  test is ``formats.dicom.looks_like_dicom_head``, for bytes already read).
* :func:`walk`: a sorted, deterministic ``os.walk`` that skips hidden entries and one folder (an output
  folder inside the source); :func:`dicom_series` groups a folder's DICOM files by SeriesInstanceUID.

Nothing here imports torch or the codec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

# suffix -> format; longest first (".nii.gz" before ".nii"). .nhdr/.mhd are NRRD/MetaImage headers with
# detached data (read-only); .dcm is one file of a DICOM series.
VOLUME_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha",
    ".dcm": "dicom",
}
# names that are DICOM without reading them (besides the table's .dcm)
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


def volume_suffix(name: str | os.PathLike) -> str | None:
    """The volume suffix that ``name`` ends with (lower case, from :data:`VOLUME_SUFFIXES`), or None.
    A name that is only a suffix (``.nii``: a hidden file) has none."""
    low = Path(name).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if low.endswith(suffix) and len(low) > len(suffix):
            return suffix
    return None


def strip_volume_suffix(name: str) -> str:
    """``scan.nii.gz -> scan``; a name without a volume suffix is returned as it is."""
    suffix = volume_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """The one DICOM sniffer: a ``.dcm``/``.ima``/``.dicom`` name, or a file whose first bytes are DICOM
    (``formats.dicom.looks_like_dicom``: the ``DICM`` preamble, or a bare dataset without one).
    An unreadable file is not DICOM (the reader reports why later)."""
    from .dicom import looks_like_dicom as dicom_bytes

    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    return dicom_bytes(p)


@dataclass(frozen=True)
class Folder:
    """One folder of a :func:`walk`: its path, its posix path relative to the root ('' for the root)
    and its visible file names, sorted."""

    path: Path
    rel: str
    files: tuple[str, ...]


def walk(root: str | os.PathLike, *, skip: str | os.PathLike | None = None,
         hidden_kept: Iterable[str] = ()) -> Iterator[Folder]:
    """Every folder under ``root`` (itself first), in sorted order; hidden files and folders and the
    folder ``skip`` (e.g. an output folder inside the source) are left out, except hidden files named in
    ``hidden_kept`` (e.g. a BIDS ``.bidsignore``)."""
    root = Path(root)
    skip_dir = Path(skip).resolve() if skip is not None else None
    kept = frozenset(hidden_kept)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and (skip_dir is None or (here / d).resolve() != skip_dir))
        rel = here.relative_to(root).as_posix()
        yield Folder(here, "" if rel == "." else rel,
                     tuple(sorted(n for n in filenames if not n.startswith(".") or n in kept)))


def dicom_series(folder: str | os.PathLike) -> list[tuple[str, tuple[str, ...]]]:
    """``[(SeriesInstanceUID, sorted file paths)]`` of the readable image stacks directly in ``folder``
    (``formats.dicom.discover_series``: odd objects such as reports, RT plans or a DICOMDIR are skipped,
    and so are stacks that cannot become a volume, e.g. a single localizer image); sorted by UID. A UID
    that holds several stacks (orientations, acquisitions) gives one entry per stack, ``UID#index``."""
    from .dicom import discover_series

    readable = discover_series(folder).readable()
    out = []
    for s in readable:
        shared = sum(t.uid == s.uid for t in readable) > 1
        out.append((f"{s.uid}#{s.index}" if shared else s.uid, tuple(sorted(s.files))))
    return sorted(out)


__all__ = ["VOLUME_SUFFIXES", "DICOM_SUFFIXES", "volume_suffix", "strip_volume_suffix",
           "looks_like_dicom", "walk", "Folder", "dicom_series"]
