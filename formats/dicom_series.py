"""DICOM series discovery (pydicom): sniff DICOM bytes, group a folder's images into stacks, choose one.

The first half of ``formats.dicom``, which re-exports every name here (callers import from there):
``looks_like_dicom``/``looks_like_dicom_head`` (the cheap byte sniff), ``discover_series`` (every file's
header, never its pixels: images grouped by SeriesInstanceUID, SOP class, size, orientation and spacing,
repeated positions split; other objects and unreadable files *skipped* with a reason) and
``select_series`` (the one stack to read, or an ``InputError`` listing them). Reading the chosen stack as
a ``Volume`` is ``formats.dicom``.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError

_DICOMDIR = "1.2.840.10008.1.3.10"
_RTDOSE = "1.2.840.10008.5.1.4.1.1.481.2"
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
        b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
        b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
ACCEPTED = ("inrv reads single-frame CT/MR/PET/NM-like slices and RT Dose grids: grayscale, 8-32 bit "
            "integers, with ImagePositionPatient/ImageOrientationPatient")


def _pydicom():
    import pydicom

    return pydicom


# ------------------------------------------------------------------------------------------ sniffing
def looks_like_dicom(path: str | Path) -> bool:
    """True when the file starts like DICOM: the Part 10 preamble (``DICM`` at byte 128), or a bare
    dataset (no preamble) whose first element is in group 0002 or 0008, little- or big-endian, explicit or
    implicit VR. Reads at most 140 bytes; never raises (an unreadable file is not DICOM)."""
    try:
        with open(path, "rb") as f:
            head = f.read(140)
    except OSError:
        return False
    return looks_like_dicom_head(head)


def looks_like_dicom_head(head: bytes) -> bool:
    """``looks_like_dicom`` on the first bytes of a file (at least 132 for the preamble test)."""
    head = bytes(head[:140])
    if head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    for order in "<>":
        group, elem = struct.unpack(order + "HH", head[:4])
        if group in (0x0002, 0x0008) and elem <= 0x0018:
            if head[4:6] in _VRS:
                return True
            length = struct.unpack(order + "I", head[4:8])[0]
            if length < 256 and order == "<":
                return True
    return False


# ------------------------------------------------------------------------------------------ discovery
@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class DicomSeries:
    """One stack of images inrv may read: files sorted as they will be read (by position when known)."""

    uid: str
    index: int = 0
    files: list[str] = field(default_factory=list)
    modality: str = ""
    sop_class: str = ""
    description: str = ""
    number: int | None = None
    rows: int = 0
    columns: int = 0
    frames: int = 1                 # frames per file (RT Dose grids: > 1)
    part: str = ""                 # "" or what separates it from other stacks of the same UID
    problem: str | None = None     # why it cannot become a volume, None when it may
    headers: list = field(default_factory=list, repr=False, compare=False)  # pydicom datasets (pixels deferred)

    @property
    def images(self) -> int:
        return len(self.files) * self.frames

    def label(self) -> str:
        """One line: ``2: CT 512x512x120 "ABDOMEN" 1.2.3... [part]``."""
        what = f"{self.modality or '?'} {self.columns}x{self.rows}x{self.images}"
        desc = f' "{self.description}"' if self.description else ""
        part = f" ({self.part})" if self.part else ""
        return f"{self.index}: {what}{desc} uid {self.uid or '(none)'}{part}"


@dataclass
class DicomFolder:
    series: list[DicomSeries] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def readable(self) -> list[DicomSeries]:
        return [s for s in self.series if s.problem is None]

    def skipped_summary(self) -> str:
        """``3 skipped (2 Basic Text SR Storage, 1 DICOMDIR)``, or ``""``."""
        if not self.skipped:
            return ""
        counts: dict[str, int] = defaultdict(int)
        for s in self.skipped:
            counts[s.reason] += 1
        parts = "; ".join(f"{n} x {why}" if n > 1 else why
                          for why, n in sorted(counts.items(), key=lambda kv: -kv[1])[:4])
        more = "; ..." if len(counts) > 4 else ""
        return f"{len(self.skipped)} file{'s' if len(self.skipped) > 1 else ''} skipped ({parts}{more})"

    def to_dict(self) -> dict[str, Any]:
        return {"series": [{"index": s.index, "uid": s.uid, "modality": s.modality, "description": s.description,
                            "sop_class": _sop_name(s.sop_class), "size": [s.columns, s.rows, s.images],
                            "files": len(s.files), "part": s.part or None, "problem": s.problem}
                           for s in self.series],
                "skipped": [{"path": k.path, "reason": k.reason} for k in self.skipped]}


def _sop_name(uid: str) -> str:
    if not uid:
        return "unknown SOP class"
    try:
        name = _pydicom().uid.UID(uid).name
    except Exception:  # noqa: BLE001 - any odd UID text
        name = uid
    return name or uid


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log lines (odd values, missing meta) while inrv inspects files and
    reports problems in its own words."""
    logger = logging.getLogger("pydicom")
    before = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = before


def _read_header(path: Path):
    """The dataset without pixel data (large values deferred), or a one-line reason it cannot be parsed."""
    pydicom = _pydicom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(str(path), defer_size=4096, force=True), None
        except Exception as e:  # noqa: BLE001 - every parse failure is a skip, not a stop
            return None, f"cannot be parsed as DICOM ({type(e).__name__})"


def _get(ds_, keyword: str, default=None):
    try:
        v = ds_.get(keyword, default)
    except Exception:  # noqa: BLE001 - a value that does not parse (e.g. IS "1A")
        return default
    return default if v is None else v


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n and all(np.isfinite(vals)) else None


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _classify(path: Path, d) -> tuple[str | None, str | None]:
    """(None, reason) for a skipped object, (problem or None, None) for an image."""
    meta = getattr(d, "file_meta", None)
    media_class = str(_get(meta, "MediaStorageSOPClassUID", "")) if meta is not None else ""
    if media_class == _DICOMDIR or "DirectoryRecordSequence" in d:
        return None, "a DICOMDIR (media directory), not an image"
    sop = str(_get(d, "SOPClassUID", "") or media_class)
    if not any(k in d for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if not sop and "Modality" not in d and "Rows" not in d:
            return None, "cannot be parsed as DICOM (no SOP class, no image)"
        modality = str(_get(d, "Modality", "") or "")
        return None, f"{_sop_name(sop)}" + (f" ({modality})" if modality else "") + " holds no image"
    if "FloatPixelData" in d or "DoubleFloatPixelData" in d:
        return "float pixel data (parametric maps) is not supported", None
    return None, None


def _problem(d, n_files: int) -> str | None:
    """Why a stack cannot become a volume, judged from one header (None: try it)."""
    return _file_problem(d) or _count_problem(d, n_files)


def _count_problem(d, n_files: int) -> str | None:
    if n_files * max(1, _int(_get(d, "NumberOfFrames", 1), 1)) < 2:
        return "a single 2D image; inrv needs a 3D volume (2 or more slices)"
    return None


def _file_problem(d) -> str | None:
    """Why an image file cannot be part of a volume, whatever the stack."""
    sop = str(_get(d, "SOPClassUID", ""))
    spp = _int(_get(d, "SamplesPerPixel", 1), 1)
    photometric = str(_get(d, "PhotometricInterpretation", "") or "").upper()
    if spp != 1 or photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        return (f"{photometric or 'colour'} pixels ({spp} samples per pixel); "
                "inrv reads grayscale (MONOCHROME1/2) images")
    if any(_get(d, k) in (None, "") for k in ("Rows", "Columns", "BitsAllocated")):
        return "pixel data without Rows/Columns/BitsAllocated; not a complete image"
    frames_text = _get(d, "NumberOfFrames")
    if frames_text not in (None, "") and _int(frames_text, -1) < 1:
        return f"NumberOfFrames {str(frames_text)!r} is not a positive number"
    bits = _int(_get(d, "BitsAllocated", 0))
    if bits not in (8, 16, 32):
        return f"{bits}-bit pixels; inrv reads 8, 16 or 32-bit integer pixels"
    frames = _int(_get(d, "NumberOfFrames", 1), 1)
    if frames > 1 and sop != _RTDOSE:
        return (f"a multi-frame {_sop_name(sop)} ({frames} frames); inrv reads single-frame slices "
                "and RT Dose grids")
    if _floats(_get(d, "ImageOrientationPatient"), 6) is None or _floats(_get(d, "ImagePositionPatient"), 3) is None:
        return (f"{_sop_name(sop)} without patient geometry (ImagePositionPatient/ImageOrientationPatient); "
                "inrv needs it to place slices in space")
    if "ModalityLUTSequence" in d:
        return "a Modality LUT Sequence (instead of RescaleSlope/Intercept) is not supported"
    return None


def _candidate_files(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def discover_series(source: str | Path | Sequence[str | Path]) -> DicomFolder:
    """Sort the DICOM files of a folder (not its subfolders) or of a list of files into image stacks.

    Never raises for a bad file: files that are not DICOM (by ``looks_like_dicom``), cannot be parsed, or
    hold no image are listed in ``skipped`` with a reason."""
    with quiet_pydicom():
        return _discover(source)


def _discover(source: str | Path | Sequence[str | Path]) -> DicomFolder:
    if isinstance(source, (str, Path)):
        folder = Path(source)
        paths = _candidate_files(folder.iterdir()) if folder.is_dir() else [folder]
    else:
        paths = _candidate_files(Path(p) for p in source)
    out = DicomFolder()
    groups: dict[tuple, list[tuple[Path, Any]]] = defaultdict(list)
    seen: dict[tuple, str] = {}
    for p in paths:
        if not looks_like_dicom(p):
            out.skipped.append(Skipped(str(p), "not DICOM"))
            continue
        d, why = _read_header(p)
        if d is None:
            out.skipped.append(Skipped(str(p), why or "cannot be parsed as DICOM"))
            continue
        try:
            problem, skip = _classify(p, d)
        except Exception as e:  # noqa: BLE001 - a header that breaks on access
            problem, skip = None, f"cannot be parsed as DICOM ({type(e).__name__})"
        if skip:
            out.skipped.append(Skipped(str(p), skip))
            continue
        iop = _floats(_get(d, "ImageOrientationPatient"), 6)
        ps = _floats(_get(d, "PixelSpacing"), 2)
        try:
            problem = problem or _file_problem(d)
        except Exception as e:  # noqa: BLE001
            problem = f"an image header that cannot be interpreted ({type(e).__name__})"
        frames = _int(_get(d, "NumberOfFrames", 1), 1)
        key = (str(_get(d, "SeriesInstanceUID", "") or ""), str(_get(d, "SOPClassUID", "") or ""),
               _int(_get(d, "Rows", 0)), _int(_get(d, "Columns", 0)),
               tuple(round(v, 3) for v in iop) if iop else None,
               tuple(round(v, 4) for v in ps) if ps else None, problem,
               str(p) if frames > 1 else "")  # a multi-frame file is a stack of its own
        instance = str(_get(d, "SOPInstanceUID", "") or "")
        if instance and (key, instance) in seen:  # the same instance twice in a stack (copied under two names)
            out.skipped.append(Skipped(str(p), f"the same image as {Path(seen[(key, instance)]).name} "
                                               "(same SOPInstanceUID)"))
            continue
        if instance:
            seen[(key, instance)] = str(p)
        groups[key].append((p, d))
    stacks: list[DicomSeries] = []
    by_uid: dict[str, list[tuple]] = defaultdict(list)
    for key in groups:
        by_uid[key[0]].append(key)
    for uid, keys in by_uid.items():
        for key in keys:
            members = groups[key]
            part = _orientation_name(key[4]) + f" {key[3]}x{key[2]}" if len(keys) > 1 else ""
            if key[7]:
                part = f"file {Path(key[7]).name}"
            for sub, members_sub in _split_repeats(members):
                stacks.append(_make_series(uid, members_sub, key[6], " ".join(x for x in (part, sub) if x)))
    stacks.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid, s.part))
    for i, s in enumerate(stacks, 1):
        s.index = i
    out.series = stacks
    return out


def _orientation_name(iop) -> str:
    if iop is None:
        return "no geometry"
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _position(d) -> tuple[float, ...] | None:
    return _floats(_get(d, "ImagePositionPatient"), 3)


def _split_repeats(members: list[tuple[Path, Any]]) -> list[tuple[str, list[tuple[Path, Any]]]]:
    """Split a stack whose positions repeat by the first attribute that makes every part repeat-free."""
    positions = [_position(d) for _, d in members]
    if len(members) < 2 or any(p is None for p in positions):
        return [("", members)]
    rounded = [tuple(round(v, 3) for v in p) for p in positions]  # type: ignore[union-attr]
    if len(set(rounded)) == len(rounded):
        return [("", members)]
    for kw, name in (("AcquisitionNumber", "acquisition"), ("TemporalPositionIdentifier", "time point"),
                     ("EchoNumbers", "echo"), ("TriggerTime", "trigger time")):
        parts: dict[str, list[int]] = defaultdict(list)
        for i, (_, d) in enumerate(members):
            parts[str(_get(d, kw, "") or "")].append(i)
        if len(parts) < 2:
            continue
        if all(len({rounded[i] for i in idx}) == len(idx) for idx in parts.values()):
            return [(f"{name} {v}", [members[i] for i in idx]) for v, idx in sorted(parts.items())]
    return [("", members)]


def _make_series(uid: str, members: list[tuple[Path, Any]], problem: str | None, part: str) -> DicomSeries:
    d0 = members[0][1]
    s = DicomSeries(uid=uid, modality=str(_get(d0, "Modality", "") or ""),
                    sop_class=str(_get(d0, "SOPClassUID", "") or ""),
                    description=" ".join(str(_get(d0, "SeriesDescription", "") or "").split())[:64],
                    number=_int(_get(d0, "SeriesNumber", None), None) if _get(d0, "SeriesNumber") not in (None, "")
                    else None,  # type: ignore[arg-type]
                    rows=_int(_get(d0, "Rows", 0)), columns=_int(_get(d0, "Columns", 0)),
                    frames=max(1, _int(_get(d0, "NumberOfFrames", 1), 1)), part=part)
    ordered = sorted(members, key=lambda m: (_int(_get(m[1], "InstanceNumber", 0)), str(m[0])))
    s.files = [str(p) for p, _ in ordered]
    s.headers = [d for _, d in ordered]
    s.problem = problem or _count_problem(d0, len(members))
    return s


# ------------------------------------------------------------------------------------------ choosing
def _short_list(stacks: list[DicomSeries], limit: int = 4) -> str:
    shown = "; ".join(s.label() for s in stacks[:limit])
    return shown + (f"; ... {len(stacks) - limit} more" if len(stacks) > limit else "")


def select_series(found: DicomFolder, where: str, series: str | int | None = None,
                  file: str | None = None) -> DicomSeries:
    """The stack to read: the one named by ``series`` (1-based index or SeriesInstanceUID), the one holding
    ``file``, or the only readable one; otherwise an ``InputError`` listing what the folder holds."""
    if series is not None and str(series).strip() != "":
        key = str(series).strip()
        if key.isdigit() and 1 <= int(key) <= len(found.series):
            return found.series[int(key) - 1]
        hits = [s for s in found.series if s.uid == key]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(f"{where}: series {key} holds {len(hits)} stacks ({_short_list(hits)}); "
                             "pick one by its index with --series N")
        raise InputError(f"{where}: no series {key!r} here; the folder holds {len(found.series)} image series"
                         + (f" ({_short_list(found.series)})" if found.series else "")
                         + "; pass an index 1.. or a SeriesInstanceUID (inrv info FOLDER lists them)")
    if file is not None:
        for s in found.series:
            if file in s.files:
                return s
        why = next((k.reason for k in found.skipped if k.path == file), "not an image")
        raise InputError(f"{where}: {why}; {ACCEPTED}")
    if not found.series:
        extra = f": {found.skipped_summary()}" if found.skipped else ""
        raise InputError(f"{where}: no DICOM image series in this folder (subfolders are not searched){extra}")
    readable = found.readable()
    if len(readable) == 1:
        return readable[0]
    if len(found.series) == 1:
        return found.series[0]
    pool = readable or found.series
    raise InputError(f"{where}: the folder holds {len(pool)} DICOM series ({_short_list(pool)}); "
                     "pick one with --series N or --series UID (inrv info FOLDER lists them)")


__all__ = ["looks_like_dicom", "looks_like_dicom_head", "discover_series", "select_series", "DicomSeries", "DicomFolder", "Skipped", "quiet_pydicom", "ACCEPTED"]
