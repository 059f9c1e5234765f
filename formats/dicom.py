"""DICOM in: find the image series of a folder, pick one, read it as a 3D ``Volume`` (pydicom).

Public API (the one place for DICOM sniffing and series discovery; other modules call these)

    looks_like_dicom(path)                -> bool   cheap byte sniff (Part 10 preamble, or a bare dataset)
    discover_series(folder_or_files)      -> DicomFolder(series=[DicomSeries...], skipped=[Skipped...])
    read_dicom(path, series=None)         -> Volume (a folder, or one file of the wanted series)
    write_dicom(volume, folder)           -> a derived CT/MR series (``dicom_write.py``)

Discovery reads every file's header (not its pixels) and never stops at a file: objects that are not
images (structured reports, presentation states, RT plans/structures, waveforms, DICOMDIR, encapsulated
documents) and files that cannot be parsed are *skipped* with a reason. Images are grouped by
SeriesInstanceUID and, inside one UID, by SOP class, size, orientation and pixel spacing (a 3-plane
localizer is three stacks); a stack whose positions repeat is split by AcquisitionNumber,
TemporalPositionIdentifier or EchoNumbers when that separates them. Each stack is a ``DicomSeries`` with a
1-based ``index`` (in the order of SeriesNumber, then UID) and, when it cannot become a volume, a
``problem`` line (colour, no patient geometry, one 2D image, unsupported multi-frame...).

Reading checks the geometry of every stack of two or more slices: one orientation, no two slices at the
same position, no sideways offset between slices (gantry tilt, or slices of different stacks), evenly
spaced along the slice normal. Pixels are decoded by pydicom (uncompressed, deflated, RLE; JPEG and JPEG
2000 through Pillow when it is installed) and, when pydicom has no decoder for the transfer syntax, by GDCM
inside SimpleITK (JPEG lossless, JPEG-LS, 12-bit JPEG). ``Volume.data`` holds the stored integers with
RescaleSlope/RescaleIntercept in ``Volume.intensity`` (RT Dose: DoseGridScaling as the slope, units Gy);
when the scaling differs between slices the physical values are kept instead. Every refusal is an
``InputError`` with one line naming what was found and what inrv reads.

``Volume.source["dicom"]``: ``tags`` (``"gggg|eeee"`` keys, string values): Modality, SOP Class and the
non-identifying acquisition attributes of ``ACQUISITION_TAGS``; the identity tags of ``PRIVATE_TAGS`` only
with ``keep_private=True``. ``sources``: ``[SOPClassUID, SOPInstanceUID, frame]`` per slice (frame 0 for
single-frame files), for the SourceImageSequence of a written series.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import uuid
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError
from .volume import Geometry, Intensity, Volume

# ------------------------------------------------------------------------------------------ kept tags
PUBLIC_TAGS = {"0008|0060": "Modality", "0008|0016": "SOPClassUID"}
# attributes that describe the acquisition and identify no one (not in PS3.15 E.1-1, or kept by its
# Clean Descriptors option: SeriesDescription); always kept
ACQUISITION_TAGS = {
    "0008|0070": "Manufacturer", "0008|1090": "ManufacturerModelName", "0018|0015": "BodyPartExamined",
    "0018|5100": "PatientPosition", "0008|103e": "SeriesDescription", "0020|0011": "SeriesNumber",
    "0018|0050": "SliceThickness", "0028|0004": "PhotometricInterpretation",
    "0028|1050": "WindowCenter", "0028|1051": "WindowWidth", "0028|1054": "RescaleType",
    # CT
    "0018|0060": "KVP", "0018|1150": "ExposureTime", "0018|1151": "XRayTubeCurrent", "0018|1152": "Exposure",
    "0018|1210": "ConvolutionKernel", "0018|1160": "FilterType",
    # MR
    "0018|0080": "RepetitionTime", "0018|0081": "EchoTime", "0018|0082": "InversionTime",
    "0018|1314": "FlipAngle", "0018|0087": "MagneticFieldStrength", "0018|0020": "ScanningSequence",
    "0018|0021": "SequenceVariant", "0018|0022": "ScanOptions", "0018|0023": "MRAcquisitionType",
    "0018|0091": "EchoTrainLength", "0018|0084": "ImagingFrequency", "0018|0085": "ImagedNucleus",
    "0018|0083": "NumberOfAverages", "0018|0095": "PixelBandwidth", "0018|0024": "SequenceName",
    # RT Dose / PET units
    "3004|0002": "DoseUnits", "3004|0004": "DoseType", "0054|1001": "Units",
}
# patient / study identity: kept only with keep_private=True
PRIVATE_TAGS = {
    "0010|0010": "PatientName", "0010|0020": "PatientID", "0010|0030": "PatientBirthDate",
    "0010|0040": "PatientSex", "0010|1010": "PatientAge", "0020|000d": "StudyInstanceUID",
    "0020|0052": "FrameOfReferenceUID", "0020|0010": "StudyID", "0008|0020": "StudyDate",
    "0008|0030": "StudyTime", "0008|0050": "AccessionNumber", "0008|1030": "StudyDescription",
    "0008|0090": "ReferringPhysicianName", "0008|0080": "InstitutionName",
}

_DICOMDIR = "1.2.840.10008.1.3.10"
_RTDOSE = "1.2.840.10008.5.1.4.1.1.481.2"
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
        b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
        b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
# (BitsAllocated, PixelRepresentation) -> stored dtype
_STORED_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16,
                  (32, 0): np.uint32, (32, 1): np.int32}
ACCEPTED = ("inrv reads single-frame CT/MR/PET/NM-like slices and RT Dose grids: grayscale, 8-32 bit "
            "integers, with ImagePositionPatient/ImageOrientationPatient")


def new_uid() -> str:
    """A fresh DICOM UID from a random UUID (the ``2.25.<uuid as integer>`` form of PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def ds(value: float) -> str:
    """A DICOM Decimal String (at most 16 characters) as precise as fits."""
    v = float(value)
    if v == 0:
        return "0"
    for p in range(16, 0, -1):
        s = f"{v:.{p}g}"
        if len(s) <= 16:
            return s
    return f"{v:.6e}"[:16]


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


# ------------------------------------------------------------------------------------------ reading
def read_dicom(path: str | Path, *, keep_private: bool = False, series: str | int | None = None) -> Volume:
    """Read a DICOM stack: the folder's only image series, the one ``series`` names (1-based index or
    SeriesInstanceUID), or, for a path to one file, the stack that file belongs to."""
    with quiet_pydicom():
        return _read_dicom(Path(path), keep_private, series)


def _read_dicom(path: Path, keep_private: bool, series: str | int | None) -> Volume:
    if path.is_file():
        found = discover_series(path.parent)
        pick = select_series(found, str(path), series, file=None if series else str(path))
    else:
        found = discover_series(path)
        pick = select_series(found, str(path), series)
    if pick.problem:
        raise InputError(f"{path}: {pick.problem}")
    return _read_stack(pick, str(path), keep_private=keep_private)


def _tag_text(d, key: str) -> str | None:
    group, elem = (int(x, 16) for x in key.split("|"))
    try:
        el = d.get((group, elem))
        if el is None or el.VR == "SQ" or el.value is None:
            return None
        v = el.value
        if isinstance(v, (bytes, bytearray)):
            return None
        if el.VM > 1:
            text = "\\".join(str(x) for x in v)
        else:
            text = str(v)
    except Exception:  # noqa: BLE001 - unparseable values are not kept
        return None
    text = text.strip()
    return text or None


def _kept_tags(d, keep_private: bool) -> dict[str, str]:
    keys = list(PUBLIC_TAGS) + list(ACQUISITION_TAGS) + (list(PRIVATE_TAGS) if keep_private else [])
    out = {}
    for key in keys:
        v = _tag_text(d, key)
        if v:
            out[key] = v
    return out


def _slice_geometry(d, where: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    iop = _floats(_get(d, "ImageOrientationPatient"), 6)
    ps = _floats(_get(d, "PixelSpacing"), 2) or (1.0, 1.0)
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])  # type: ignore[index]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if min(nr, nc) < 1e-6 or abs(float(row @ col)) / (nr * nc) > 1e-3:
        raise InputError(f"{where}: ImageOrientationPatient {list(iop)} is not two perpendicular directions; "  # type: ignore[arg-type]
                         "inrv needs a valid slice orientation")
    if min(ps) <= 0:
        raise InputError(f"{where}: PixelSpacing {list(ps)} is not positive")
    return row / nr, col / nc, (float(ps[0]), float(ps[1]))


def check_positions(positions: np.ndarray, normal: np.ndarray, inplane: float, where: str) -> tuple[np.ndarray, float]:
    """Order of the slices along ``normal`` and the slice spacing; ``InputError`` for duplicates, sideways
    offsets (tilt) and uneven spacing. Applies to every stack of 2 or more slices."""
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    p, a = positions[order], along[order]
    steps = np.diff(a)
    tol = 1e-3 + 0.01 * float(inplane)
    n_dup = int(np.sum(steps < tol))
    if n_dup:
        raise InputError(f"{where}: {len(a) - n_dup} distinct positions for {len(a)} slices along the slice normal "
                         f"(duplicate slices, or several acquisitions in one series); inrv reads stacks with "
                         f"one slice per position")
    spacing = float((a[-1] - a[0]) / (len(a) - 1))
    sideways = (p - p[0]) - np.outer(a - a[0], normal)
    off = float(np.max(np.linalg.norm(sideways, axis=1)))
    if off > 1e-3 + 0.01 * spacing:
        raise InputError(f"{where}: slices are offset sideways by up to {off:.3g} mm across the stack "
                         f"(gantry tilt, or images of different stacks); inrv reads stacks whose slices line "
                         f"up along their normal")
    if np.max(np.abs(steps - spacing)) > 1e-3 + 0.01 * spacing:
        raise InputError(f"{where}: slices are not evenly spaced (steps of {steps.min():.4g} to {steps.max():.4g} mm "
                         f"along the slice normal: missing slices?); inrv reads evenly spaced stacks")
    return order, spacing


_TS_NAMES_DECODED = "uncompressed, deflated, RLE, JPEG, JPEG-LS and JPEG 2000"


def _decode(path: str, d, where: str) -> np.ndarray:
    """Stored pixel values of one file, (frames, rows, cols) or (rows, cols), native byte order."""
    ts = ""
    meta = getattr(d, "file_meta", None)
    if meta is not None:
        ts = str(_get(meta, "TransferSyntaxUID", "") or "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr = np.asarray(d.pixel_array)
        except Exception as first:  # noqa: BLE001 - try GDCM (compressed syntaxes only) before giving up
            compressed = bool(ts) and _pydicom().uid.UID(ts).is_compressed
            arr = _decode_gdcm(path, d) if compressed else None
            if arr is None:
                if compressed:
                    raise InputError(f"{where}: cannot decode {_sop_name(ts)} pixel data (no decoder "
                                     f"installed for it, or the data are damaged); inrv decodes "
                                     f"{_TS_NAMES_DECODED} through pydicom and GDCM") from None
                msg = str(first).lower()
                if "less than expected" in msg or "truncat" in msg or isinstance(first, (EOFError, OSError)):
                    raise InputError(f"{where}: the pixel data are shorter than Rows x Columns x frames "
                                     "(a truncated file?)") from None
                raise InputError(f"{where}: the pixel data cannot be decoded ({type(first).__name__}); "
                                 f"inrv decodes {_TS_NAMES_DECODED} DICOM") from None
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _decode_gdcm(path: str, d) -> np.ndarray | None:
    """GDCM (inside SimpleITK) for transfer syntaxes pydicom cannot decode here; GDCM applies the rescale,
    which is undone with this file's own RescaleSlope/Intercept. None when GDCM fails too."""
    try:
        import SimpleITK as sitk

        from .sitk_io import quiet_itk

        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(path)
        with quiet_itk():
            img = reader.Execute()
        if img.GetNumberOfComponentsPerPixel() != 1:
            return None
        arr = sitk.GetArrayFromImage(img)
    except Exception:  # noqa: BLE001 - any GDCM failure: the caller reports it in its own words
        return None
    slope = float(_get(d, "RescaleSlope", 1) or 1)
    inter = float(_get(d, "RescaleIntercept", 0) or 0)
    if (slope, inter) != (1.0, 0.0):
        arr = np.rint((arr.astype(np.float64) - inter) / slope)
    bits, rep = _int(_get(d, "BitsAllocated", 16), 16), _int(_get(d, "PixelRepresentation", 0))
    dt = _STORED_DTYPES.get((bits, rep))
    if dt is not None:
        info = np.iinfo(dt)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            return None
        arr = arr.astype(dt)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _scaling(d) -> tuple[float, float]:
    if str(_get(d, "SOPClassUID", "")) == _RTDOSE:
        try:
            g = float(_get(d, "DoseGridScaling", 1.0))
        except (TypeError, ValueError):
            g = 1.0
        return (g if g > 0 else 1.0), 0.0
    try:
        s = float(_get(d, "RescaleSlope", 1.0) or 1.0)
        b = float(_get(d, "RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 1.0, 0.0
    return (s if s != 0 else 1.0), b


def _units(tags: dict[str, str], sop: str) -> str | None:
    modality = (tags.get("0008|0060") or "").upper()
    if sop == _RTDOSE:
        u = (tags.get("3004|0002") or "").upper()
        return {"GY": "Gy", "RELATIVE": "relative"}.get(u, u or None)
    rescale_type = (tags.get("0028|1054") or "").upper()
    if modality == "CT" or rescale_type == "HU":
        return "HU"
    if rescale_type not in ("", "US"):
        return rescale_type
    if modality == "PT" and tags.get("0054|1001"):
        return tags["0054|1001"]
    return None


def _read_stack(s: DicomSeries, where: str, *, keep_private: bool) -> Volume:
    # the discovery's datasets: their pixel data were deferred and are read from the file on access
    headers = s.headers if len(s.headers) == len(s.files) else [_read_full(f) for f in s.files]
    d0 = headers[0]
    row, col, (row_sp, col_sp) = _slice_geometry(d0, where)
    normal = np.cross(row, col)
    sop = str(_get(d0, "SOPClassUID", ""))
    if s.frames > 1:  # RT Dose grid: one file, frames at ImagePositionPatient + offset * normal
        offsets = _floats(_get(d0, "GridFrameOffsetVector"), s.frames)
        if offsets is None:
            raise InputError(f"{where}: an RT Dose grid of {s.frames} frames without a GridFrameOffsetVector "
                             "of as many values; inrv cannot place its frames")
        ipp = np.asarray(_position(d0))
        off = np.asarray(offsets) - offsets[0]
        positions = ipp[None, :] + off[:, None] * normal[None, :]
    else:
        positions = np.asarray([_position(h) for h in headers], dtype=np.float64)
    order, spacing = check_positions(positions, normal, min(row_sp, col_sp), where)

    bits, rep = _int(_get(d0, "BitsAllocated", 16), 16), _int(_get(d0, "PixelRepresentation", 0))
    stored_dt = _STORED_DTYPES.get((bits, rep))
    if stored_dt is None:
        raise InputError(f"{where}: {bits}-bit pixels with PixelRepresentation {rep}; inrv reads 8, 16 and 32-bit "
                         "integer pixels")
    if bits > 8 and _int(_get(d0, "BitsStored", bits), bits) <= 8:  # e.g. 8-bit values in 16-bit words
        stored_dt = np.int8 if rep else np.uint8
    rows, cols = s.rows, s.columns
    nz = len(positions)
    data = np.empty((cols, rows, nz), dtype=stored_dt)
    scales = []
    if s.frames > 1:
        full = headers[0]
        arr = _decode(s.files[0], full, where)
        if arr.shape != (s.frames, rows, cols):
            raise InputError(f"{where}: decoded pixel data of shape {arr.shape}, expected {(s.frames, rows, cols)} "
                             "from NumberOfFrames/Rows/Columns")
        _fits(arr, stored_dt, where)
        data[...] = arr[order].transpose(2, 1, 0)
        scales = [_scaling(full)] * nz
        sources = [[sop, str(_get(full, "SOPInstanceUID", "")), int(i) + 1] for i in order]
    else:
        sources = []
        for k, i in enumerate(order):
            full = headers[i]
            arr = _decode(s.files[i], full, where)
            if arr.shape != (rows, cols):
                raise InputError(f"{s.files[i]}: decoded pixel data of shape {arr.shape}, expected {(rows, cols)} "
                                 "from Rows/Columns")
            _fits(arr, stored_dt, s.files[i])
            data[:, :, k] = arr.T
            scales.append(_scaling(full))
            sources.append([str(_get(full, "SOPClassUID", "")), str(_get(full, "SOPInstanceUID", "")), 0])
    slopes = {sc[0] for sc in scales}
    inters = {sc[1] for sc in scales}
    if len(slopes) == 1 and len(inters) == 1:
        slope, inter = slopes.pop(), inters.pop()
        values: np.ndarray = data
    else:  # per-slice scaling: keep physical values
        sl = np.asarray([sc[0] for sc in scales])
        ic = np.asarray([sc[1] for sc in scales])
        values = _compact(data.astype(np.float64) * sl[None, None, :] + ic[None, None, :])
        slope, inter = 1.0, 0.0
    tags = _kept_tags(d0, keep_private)
    if sop:
        tags["0008|0016"] = sop
    d = np.column_stack([row, col, normal])
    g = Geometry((col_sp, row_sp, spacing), tuple(float(v) for v in positions[order[0]]),
                 tuple(float(v) for v in d.ravel()))
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    return Volume(data=values, geometry=g,
                  intensity=Intensity(dtype=values.dtype.name, slope=float(slope), intercept=float(inter),
                                      units=_units(tags, sop), min=lo, max=hi),
                  source={"kind": "dicom", "dicom": {"tags": tags, "sources": sources}})


def _read_full(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _pydicom().dcmread(path, force=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path}: cannot be parsed as DICOM ({type(e).__name__})") from None


def _fits(arr: np.ndarray, dt, where: str) -> None:
    if arr.dtype.kind not in "iu":
        raise InputError(f"{where}: decoded {arr.dtype.name} pixels; inrv reads integer DICOM pixels")
    info = np.iinfo(dt)
    if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
        raise InputError(f"{where}: pixel values {int(arr.min())}..{int(arr.max())} do not fit the declared "
                         f"{np.dtype(dt).name} (BitsAllocated/BitsStored/PixelRepresentation)")


def _compact(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iu":
        for dt in (np.int16, np.int32):
            info = np.iinfo(dt)
            if values.size == 0 or (values.min() >= info.min and values.max() <= info.max):
                return values.astype(dt)
        return values
    v = values.astype(np.float64)
    if np.all(np.isfinite(v)) and np.array_equal(v, np.rint(v)):
        return _compact(v.astype(np.int64))
    return values.astype(np.float32)


def write_dicom(volume: Volume, folder: Path) -> None:
    """Write ``volume`` as a derived DICOM series into the (existing, empty) ``folder`` (see ``dicom_write``)."""
    from .dicom_write import write_series

    write_series(volume, Path(folder))


def dicom_summary(source: dict[str, Any]) -> dict[str, str]:
    """Readable names of the kept tags (for ``inrv info``)."""
    names = {**PUBLIC_TAGS, **ACQUISITION_TAGS, **PRIVATE_TAGS}
    tags = (source.get("dicom") or {}).get("tags") or {}
    return {names.get(k, k): v for k, v in tags.items()}


def describe_folder(path: str | Path) -> dict[str, Any]:
    """What ``inrv info FOLDER`` prints for a DICOM folder (or the folder of one DICOM file)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    found = discover_series(folder)
    return {"path": str(folder), "kind": "dicom-folder", **found.to_dict()}


def describe_folder_text(d: dict[str, Any]) -> str:
    lines = [f"{d['path']}: {len(d['series'])} DICOM image series, {len(d['skipped'])} other files"]
    for s in d["series"]:
        x, y, z = s["size"]
        desc = f' "{s["description"]}"' if s["description"] else ""
        part = f" ({s['part']})" if s["part"] else ""
        lines.append(f"  [{s['index']}] {s['modality'] or '?'} {x}x{y}x{z}{desc}  {s['sop_class']}  uid {s['uid']}{part}")
        if s["problem"]:
            lines.append(f"      not readable: {s['problem']}")
    reasons: dict[str, int] = defaultdict(int)
    for k in d["skipped"]:
        reasons[k["reason"]] += 1
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"  skipped {n} file{'s' if n > 1 else ''}: {why}")
    return "\n".join(lines)


__all__ = ["looks_like_dicom", "looks_like_dicom_head", "discover_series", "select_series", "read_dicom", "write_dicom", "DicomSeries",
           "DicomFolder", "Skipped", "check_positions", "describe_folder", "describe_folder_text", "new_uid", "ds",
           "PUBLIC_TAGS", "ACQUISITION_TAGS", "PRIVATE_TAGS", "dicom_summary"]
