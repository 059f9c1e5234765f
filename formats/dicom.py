"""DICOM in: find the image series of a folder, pick one, read it as a 3D ``Volume`` (pydicom).

Public API (the one place for DICOM sniffing and series discovery; other modules call these)

    looks_like_dicom(path)                -> bool   cheap byte sniff (Part 10 preamble, or a bare dataset)
    discover_series(folder_or_files)      -> DicomFolder(series=[DicomSeries...], skipped=[Skipped...])
    read_dicom(path, series=None)         -> Volume (a folder, or one file of the wanted series)
    write_dicom(volume, folder)           -> a derived CT/MR series (``dicom_write.py``)

Sniffing, discovery and selection live in ``dicom_series.py`` and are re-exported here; this module
reads the chosen stack.

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

import uuid
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .dicom_series import (  # noqa: F401 - re-exported: formats.dicom stays the one DICOM API
    _DICOMDIR,
    _RTDOSE,
    _VRS,
    ACCEPTED,
    DicomFolder,
    DicomSeries,
    Skipped,
    _candidate_files,
    _classify,
    _count_problem,
    _discover,
    _file_problem,
    _floats,
    _get,
    _int,
    _make_series,
    _orientation_name,
    _position,
    _problem,
    _pydicom,
    _read_header,
    _short_list,
    _sop_name,
    _split_repeats,
    discover_series,
    looks_like_dicom,
    looks_like_dicom_head,
    quiet_pydicom,
    select_series,
)
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

# (BitsAllocated, PixelRepresentation) -> stored dtype
_STORED_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16,
                  (32, 0): np.uint32, (32, 1): np.int32}


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
