"""Batch, chapter 1: the inputs of an archive.

:func:`discover` turns a source folder into a sorted list of :class:`Job` (one per volume file, one per
DICOM series), :func:`shard` takes a fixed share of it for job arrays. Which names are volumes and
which files are DICOM is decided in :mod:`inrv.formats.discovery` (the one table, the one sniffer).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ...errors import UsageError
from ...formats.discovery import VOLUME_SUFFIXES, dicom_series, looks_like_dicom, volume_suffix, walk


@dataclass(frozen=True)
class Job:
    """One input of a batch.

    ``key`` is the input's path relative to SRC (posix); for a DICOM series it is
    ``rel/dir/<SeriesInstanceUID>`` so two series of one folder are two keys. ``files`` is the sorted
    list of the series' files (absolute), empty for a single file. ``output`` is relative to DST.
    """

    key: str
    kind: str                     # "file" or "dicom"
    src: str                      # absolute path: the file, or the series' folder
    output: str                   # relative posix path under DST
    files: tuple[str, ...] = ()
    series_uid: str | None = None



def _matches(rel: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """fnmatch on the relative posix path (``*`` also crosses ``/``) or on the base name."""
    include, exclude = list(include), list(exclude)
    name = rel.rsplit("/", 1)[-1]

    def hit(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    if include and not hit(include):
        return False
    return not hit(exclude)



_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def discover(src: str | os.PathLike, *, include: Iterable[str] = (), exclude: Iterable[str] = (),
             dst: str | os.PathLike | None = None) -> list[Job]:
    """Walk ``src`` recursively and return the sorted jobs.

    Every NIfTI/NRRD/MHA file is one job (``a/scan.nii.gz -> a/scan.inrv``); every DICOM series is
    one job (``a/dir -> a/dir/<SeriesInstanceUID>.inrv``), grouped by SeriesInstanceUID, not by
    folder. Hidden files and folders and ``dst`` (when it lies inside ``src``) are skipped.
    ``include``/``exclude`` are glob patterns matched against the relative path (for a series: the
    folder's relative path) or the base name; exclude wins.
    """
    root = Path(src).resolve()
    if not root.is_dir():
        raise UsageError(f"batch source {src} is not a folder")
    jobs: list[Job] = []
    for folder in walk(root, skip=dst):
        dicom_candidate = False
        for name in folder.files:
            rel = f"{folder.rel}/{name}" if folder.rel else name
            suf = volume_suffix(name)
            if suf is not None and VOLUME_SUFFIXES[suf] != "dicom":
                if _matches(rel, include, exclude):
                    out = rel[: len(rel) - len(suf)] + ".inrv"
                    jobs.append(Job(key=rel, kind="file", src=str(folder.path / name), output=out))
            elif not dicom_candidate and (folder.path / name).is_file() and looks_like_dicom(folder.path / name):
                dicom_candidate = True
        if dicom_candidate and _matches(folder.rel or ".", include, exclude):
            jobs.extend(_series_jobs(folder.path, folder.rel))
    jobs = _dedupe_outputs(jobs)
    return sorted(jobs, key=lambda j: j.key)


def _series_jobs(here: Path, rel_dir: str) -> list[Job]:
    jobs = []
    for uid, files in dicom_series(here):
        stem = _SAFE.sub("_", uid)
        key = f"{rel_dir}/{stem}" if rel_dir else stem
        jobs.append(Job(key=key, kind="dicom", src=str(here), output=key + ".inrv", files=files, series_uid=uid))
    return jobs


def _dedupe_outputs(jobs: list[Job]) -> list[Job]:
    """``scan.nii`` and ``scan.nii.gz`` side by side would both map to ``scan.inrv``: give each
    colliding input its full name plus ``.inrv`` instead (deterministic)."""
    by_out: dict[str, list[Job]] = {}
    for j in jobs:
        by_out.setdefault(j.output, []).append(j)
    fixed = []
    for out, group in by_out.items():
        if len(group) == 1:
            fixed.extend(group)
        else:
            fixed.extend(dataclasses.replace(j, output=j.key + ".inrv") for j in group)
    return fixed


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N, zero-based) -> ``(I, N)``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"bad --shard {text!r}: use I/N with 0 <= I < N, e.g. 0/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad --shard {text!r}: need 0 <= I < N (zero-based; Slurm: --array=0-{max(n - 1, 0)})")
    return i, n


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The fixed share of shard ``index`` of ``count``: every ``count``-th job of the sorted list,
    starting at ``index``. Depends only on the sorted inputs, so shards never overlap."""
    ordered = sorted(jobs, key=lambda j: j.key)
    return [j for n, j in enumerate(ordered) if n % count == index]
