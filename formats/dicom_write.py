"""DICOM out: a decoded volume as a derived CT or MR Image Storage series, built with pydicom.

One file per slice (``00001.dcm`` ...), Explicit VR Little Endian, every Type 1 and Type 2 attribute of
the CT Image or MR Image IOD (PS3.3 A.3 / A.4) filled in, so ``dciodvfy`` reports no error and
``dcm2niix``/SimpleITK load the folder as one series with its geometry.

Which IOD
    CT Image Storage when the source Modality is CT (or, without a DICOM source, when the units are HU);
    MR Image Storage when it is MR, or when there is no modality to copy. **Fallback:** any other source
    modality (PT, NM, RTDOSE, US...) is written as MR Image Storage with ScanningSequence ``RM`` (research
    mode) and SequenceVariant ``NONE``, its original modality named in the SeriesDescription and
    DerivationDescription: the one classic IOD that carries patient geometry and arbitrary units without
    attributes inrv could not fill in. inrv never writes an IOD it cannot fill in completely.

Pixels
    CT/MR pixels are 16-bit integers. An integer volume whose values fit int16 (signed) or uint16 is
    written as is with its RescaleSlope/Intercept (in MR, uint8/int8 as 16-bit words with BitsStored 8, so
    they read back as uint8/int8; CT needs BitsStored 12..16, so they read back as 16-bit); other volumes (floats, 32-bit integers beyond 16 bits) are quantised to int16 with a
    slope/intercept spanning their physical range.

What is written (see ``docs/formats.md`` for the table): ImageType ``DERIVED\\SECONDARY``,
DerivationDescription + DerivationCodeSequence (DCM 113040 "Lossy Compression"), SourceImageSequence
(purpose DCM 121320 "Uncompressed predecessor") when the source was DICOM, LossyImageCompression ``01``
with the ratio when known, new Series/SOP Instance UIDs, the non-identifying acquisition attributes the
reader kept, and the patient/study identity only when the reader kept it (``keep_private``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, RunError
from .dicom import ACQUISITION_TAGS, PRIVATE_TAGS, ds, new_uid
from .volume import Geometry, Volume

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
# LossyImageCompressionMethod (0028,2114): PS3.3 C.7.6.1.1.5.1 has no Defined Term for a neural codec;
# Defined Terms may be extended, and this value names the method unambiguously.
LOSSY_METHOD = "INRV"
DERIVATION = "Lossy compression with inrv (neural implicit representation)"

# kept acquisition attributes written for every IOD / only for one
_GENERAL = ("0008|0070", "0008|1090", "0018|0015", "0018|5100", "0018|0050", "0028|1050", "0028|1051",
            "0028|0004")
_CT_ONLY = ("0018|0060", "0018|1150", "0018|1151", "0018|1152", "0018|1210", "0018|1160")
_MR_ONLY = ("0018|0080", "0018|0081", "0018|0082", "0018|1314", "0018|0087", "0018|0020", "0018|0021",
            "0018|0022", "0018|0023", "0018|0091", "0018|0084", "0018|0085", "0018|0083", "0018|0095", "0018|0024")
# identity attributes copied back with keep_private (StudyInstanceUID / FrameOfReferenceUID handled apart)
_IDENTITY = ("0010|0010", "0010|0020", "0010|0030", "0010|0040", "0010|1010", "0020|0010", "0008|0020",
             "0008|0030", "0008|0050", "0008|1030", "0008|0090", "0008|0080")


def _right_handed(g: Geometry, nz: int) -> tuple[Geometry, bool]:
    """The geometry to write and whether the slice order is reversed (left-handed input)."""
    d = np.asarray(g.direction, dtype=np.float64).reshape(3, 3).copy()
    if np.linalg.det(d) >= 0:
        return g, False
    origin = np.asarray(g.origin, dtype=np.float64) + d[:, 2] * float(g.spacing[2]) * (nz - 1)
    d[:, 2] *= -1
    return Geometry(tuple(g.spacing), tuple(origin.tolist()), tuple(d.ravel().tolist())), True


def pixel_plan(volume: Volume) -> dict[str, Any]:
    """How the voxels become 16-bit DICOM pixels: {dtype, rep, bits_stored, slope, intercept, convert}."""
    data, it = volume.data, volume.intensity
    s0, b0 = float(it.slope) or 1.0, float(it.intercept)
    if data.dtype.kind in "iu" and data.size:
        lo, hi = int(data.min()), int(data.max())
        if data.dtype in (np.uint8, np.uint16) or (lo >= 0 and hi > 32767):
            if lo >= 0 and hi <= 65535:
                bits = 8 if data.dtype == np.uint8 else 16
                return {"dtype": np.uint16, "rep": 0, "bits_stored": bits, "slope": s0, "intercept": b0,
                        "convert": lambda sl: sl.astype(np.uint16)}
        if lo >= -32768 and hi <= 32767:
            bits = 8 if data.dtype == np.int8 else 16
            return {"dtype": np.int16, "rep": 1, "bits_stored": bits, "slope": s0, "intercept": b0,
                    "convert": lambda sl: sl.astype(np.int16)}
    # floats, or integers beyond 16 bits: quantise the physical values to int16
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    lo_p = float(finite.min()) * s0 + b0 if finite.size else 0.0
    hi_p = float(finite.max()) * s0 + b0 if finite.size else 0.0
    lo_p, hi_p = min(lo_p, hi_p), max(lo_p, hi_p)
    slope = float(ds((hi_p - lo_p) / 65535.0)) if hi_p > lo_p else 1.0
    inter = float(ds(lo_p + 32768.0 * slope))

    def convert(sl: np.ndarray) -> np.ndarray:
        phys = np.nan_to_num(sl.astype(np.float64) * s0 + b0, nan=lo_p, posinf=hi_p, neginf=lo_p)
        return np.clip(np.rint((phys - inter) / slope), -32768, 32767).astype(np.int16)

    return {"dtype": np.int16, "rep": 1, "bits_stored": 16, "slope": slope, "intercept": inter, "convert": convert}


def _iod(volume: Volume, kept: dict[str, str]) -> tuple[str, str, str | None]:
    """(SOP class UID, Modality, the source modality when the MR fallback is used)."""
    source_modality = (kept.get("0008|0060") or "").strip().upper()
    if source_modality == "CT" or (not source_modality and (volume.intensity.units or "").upper() == "HU"):
        return CT_STORAGE, "CT", None
    if source_modality in ("", "MR"):
        return MR_STORAGE, "MR", None
    return MR_STORAGE, "MR", source_modality


def _element(tag_key: str, text: str):
    """A pydicom DataElement from a kept ``"gggg|eeee"`` string, with the dictionary VR; None if unusable."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import DataElement

    group, elem = (int(x, 16) for x in tag_key.split("|"))
    try:
        vr = dictionary_VR((group, elem))
    except KeyError:
        return None
    if vr not in ("CS", "LO", "SH", "DS", "IS", "PN", "DA", "TM", "UI", "AS", "LT", "ST", "UT"):
        return None
    value: Any = text.split("\\") if "\\" in text and vr not in ("LT", "ST", "UT") else text
    try:
        return DataElement((group, elem), vr, value)
    except Exception:  # noqa: BLE001 - a kept value that no longer validates is dropped
        return None


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


@dataclass(frozen=True)
class _Series:
    """What every slice of one written series shares: the IOD, the new UIDs, the kept attributes."""
    volume: Volume
    geometry: Geometry
    plan: dict[str, Any]
    kept: dict[str, str]
    from_dicom: bool
    lossy: dict[str, Any]
    sop_class: str
    modality: str
    fallback_from: str | None
    identity_kept: bool
    direction: np.ndarray
    origin: np.ndarray
    study_uid: str
    series_uid: str
    frame_uid: str
    series_desc: str
    series_number: str
    p_lo: float
    p_hi: float
    charset: str | None
    copy_keys: list[str]


def _check_shape(data: np.ndarray) -> None:
    """Refuse a volume the CT/MR Image IODs cannot hold, with the format to write instead."""
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(f"DICOM output needs at least 2 slices of at least 2 x 2 pixels, got shape "
                         f"{tuple(data.shape)}; write NIfTI, NRRD or MHA instead")
    nx, ny, _ = data.shape
    if max(nx, ny) > 65535:
        raise InputError(f"DICOM slices have at most 65535 rows/columns, got {nx} x {ny}; write NIfTI instead")


def _series_plan(volume: Volume, plan: dict[str, Any], g: Geometry, dicom_src: dict, lossy: dict) -> _Series:
    """The per-series values: IOD, UIDs (kept or new), description, number, window, charset, kept keys."""
    kept: dict[str, str] = {str(k).lower(): str(v) for k, v in (dicom_src.get("tags") or {}).items()}
    sop_class, modality, fallback_from = _iod(volume, kept)
    if modality == "CT":
        plan["bits_stored"] = 16  # the CT Image module allows BitsStored 12..16 only: 8-bit data read back as 16-bit
    identity_kept = any(k in kept for k in PRIVATE_TAGS)

    d = np.asarray(g.direction, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(g.origin, dtype=np.float64)
    study_uid = kept.get("0020|000d") or new_uid()
    series_uid = new_uid()
    frame_uid = kept.get("0020|0052") or new_uid()
    desc = kept.get("0008|103e")
    if fallback_from:
        series_desc = f"{desc} ({fallback_from} as MR, inrv)" if desc else f"{fallback_from} as MR (inrv)"
    else:
        series_desc = f"{desc} (inrv)" if desc else "inrv decoded"
    try:
        series_number = str(int(kept.get("0020|0011", "0")) + 1000)
    except ValueError:
        series_number = "1000"
    physical = volume.data[np.isfinite(volume.data)] if volume.data.dtype.kind == "f" else volume.data
    s0, b0 = float(volume.intensity.slope) or 1.0, float(volume.intensity.intercept)
    p_lo = float(physical.min()) * s0 + b0 if physical.size else 0.0
    p_hi = float(physical.max()) * s0 + b0 if physical.size else 0.0
    text_values = [v for k, v in kept.items() if k in _IDENTITY or k in ACQUISITION_TAGS]
    charset = "ISO_IR 192" if any(not v.isascii() for v in text_values + [series_desc]) else None
    copy_keys = list(_GENERAL) + list(_CT_ONLY if modality == "CT" else _MR_ONLY if not fallback_from else ())
    if identity_kept:
        copy_keys += list(_IDENTITY)
    return _Series(volume=volume, geometry=g, plan=plan, kept=kept, from_dicom=bool(dicom_src), lossy=lossy,
                   sop_class=sop_class, modality=modality, fallback_from=fallback_from,
                   identity_kept=identity_kept, direction=d, origin=origin, study_uid=study_uid,
                   series_uid=series_uid, frame_uid=frame_uid, series_desc=series_desc,
                   series_number=series_number, p_lo=p_lo, p_hi=p_hi, charset=charset, copy_keys=copy_keys)


def _set_study_and_series(x, s: _Series) -> None:
    """Patient, General Study/Series, Frame of Reference, Equipment and the derivation of one slice."""
    from pydicom.sequence import Sequence

    if s.charset:
        x.SpecificCharacterSet = s.charset
    x.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if s.modality == "CT" else "OTHER"]
    x.SOPClassUID = s.sop_class
    # Patient (Type 2) and General Study (Type 1/2): empty unless kept on purpose
    x.PatientName = ""
    x.PatientID = ""
    x.PatientBirthDate = ""
    x.PatientSex = ""
    x.StudyDate = ""
    x.StudyTime = ""
    x.AccessionNumber = ""
    x.ReferringPhysicianName = ""
    x.StudyID = ""
    x.StudyInstanceUID = s.study_uid
    # General Series
    x.Modality = s.modality
    x.SeriesInstanceUID = s.series_uid
    x.SeriesNumber = s.series_number
    x.SeriesDescription = s.series_desc[:64]
    x.PatientPosition = ""
    x.Laterality = ""
    # Frame of Reference, General Equipment
    x.FrameOfReferenceUID = s.frame_uid
    x.PositionReferenceIndicator = ""
    x.Manufacturer = ""
    # General Image: how it was derived
    x.DerivationDescription = (DERIVATION if not s.fallback_from
                               else f"{DERIVATION}; a {s.fallback_from} source stored as MR Image")
    x.DerivationCodeSequence = Sequence([_code("113040", "DCM", "Lossy Compression")])
    x.LossyImageCompression = "01"
    ratio = s.lossy.get("lossy_ratio")
    if ratio is not None and float(ratio) > 0:
        x.LossyImageCompressionRatio = ds(float(ratio))


def _set_image_attributes(x, s: _Series) -> None:
    """Image Plane, Image Pixel, the CT/MR module, the window, then the kept attributes over the defaults."""
    g, plan, d, kept = s.geometry, s.plan, s.direction, s.kept
    nx, ny, _ = s.volume.data.shape
    # Image Plane
    x.ImageOrientationPatient = [ds(v) for v in (*d[:, 0], *d[:, 1])]
    x.PixelSpacing = [ds(g.spacing[1]), ds(g.spacing[0])]      # row spacing (y), column spacing (x)
    x.SliceThickness = ds(g.spacing[2])
    # Image Pixel
    x.SamplesPerPixel = 1
    x.PhotometricInterpretation = "MONOCHROME2"
    x.Rows, x.Columns = ny, nx
    x.BitsAllocated = 16
    x.BitsStored = plan["bits_stored"]
    x.HighBit = plan["bits_stored"] - 1
    x.PixelRepresentation = plan["rep"]
    if s.modality == "CT" or (plan["slope"], plan["intercept"]) != (1.0, 0.0):
        # Type 1 in CT; not part of the classic MR IOD, but read by every MR tool when present
        x.RescaleIntercept = ds(plan["intercept"])
        x.RescaleSlope = ds(plan["slope"])
    if s.modality == "CT":
        x.RescaleType = "HU" if (s.volume.intensity.units or "").upper() == "HU" else "US"
        x.KVP = ""
        x.AcquisitionNumber = ""
    else:
        x.ScanningSequence = "RM"
        x.SequenceVariant = "NONE"
        x.ScanOptions = ""
        x.MRAcquisitionType = ""
        x.RepetitionTime = ""
        x.EchoTime = ""
        x.EchoTrainLength = ""
        x.SpacingBetweenSlices = ds(g.spacing[2])
    x.WindowCenter = ds((s.p_lo + s.p_hi) / 2)
    x.WindowWidth = ds(max(s.p_hi - s.p_lo, 1.0))
    for key in s.copy_keys:                    # the reader's kept values win over the defaults above
        if key in kept:
            el = _element(key, kept[key])
            if el is not None:
                x[el.tag] = el
    if "0018|0050" in kept and abs(_num(kept["0018|0050"]) - float(g.spacing[2])) > 0.5 * float(g.spacing[2]):
        x.SliceThickness = ds(g.spacing[2])     # a resampled decode: the old thickness no longer holds
    if not s.identity_kept and s.from_dicom:
        x.PatientIdentityRemoved = "YES"
        x.DeidentificationMethod = ("inrv: patient and study identity removed (PS3.15 E.1-1 basic profile "
                                    "attributes); acquisition attributes and source image UIDs kept")[:64]


def _source_reference(sources: list, j: int, nz: int):
    """The SourceImageSequence item for written slice ``j`` (the nearest source slice), or None."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    n_src = len(sources)
    i = j if n_src == nz else int(round(j * (n_src - 1) / max(1, nz - 1)))
    ref = sources[min(max(i, 0), n_src - 1)]
    item = Dataset()
    item.ReferencedSOPClassUID = str(ref[0])
    item.ReferencedSOPInstanceUID = str(ref[1])
    if len(ref) > 2 and int(ref[2] or 0) > 0:
        item.ReferencedFrameNumber = str(int(ref[2]))
    item.PurposeOfReferenceCodeSequence = Sequence([_code("121320", "DCM", "Uncompressed predecessor")])
    return item if item.ReferencedSOPClassUID and item.ReferencedSOPInstanceUID else None


def _pixel_bytes(data: np.ndarray, j: int, plan: dict[str, Any]) -> bytes:
    """Slice ``j`` of ``data`` as the little-endian 16-bit PixelData of the plan (rows = y, columns = x)."""
    plane = plan["convert"](np.asarray(data[:, :, j]))
    return np.ascontiguousarray(plane.T).astype("<" + np.dtype(plan["dtype"]).str[1:]).tobytes()


def _save_slice(x, sop_class: str, sop_uid: str, path: Path, k: int) -> None:
    """Attach the file meta (Explicit VR Little Endian) and write one slice; pydicom's refusal as one line."""
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = EXPLICIT_VR_LE
    x.file_meta = meta
    try:
        x.save_as(path, enforce_file_format=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - pydicom refusing a value: one line, never a traceback
        raise RunError(f"cannot write DICOM slice {k + 1}: {' '.join(str(e).split())[:160]}") from None


def write_series(volume: Volume, folder: Path) -> None:
    """Write ``volume`` as a DICOM series into the (existing, empty) ``folder``, one slice at a time."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    data = volume.data
    _check_shape(data)
    nz = data.shape[2]
    plan = pixel_plan(volume)
    g, flipped = _right_handed(volume.geometry, nz)
    src = volume.source if isinstance(volume.source, dict) else {}
    dicom_src = src.get("dicom") or {}
    sources = [s for s in (dicom_src.get("sources") or []) if isinstance(s, (list, tuple)) and len(s) >= 2]
    series = _series_plan(volume, plan, g, dicom_src, src.get("lossy") or {})
    width = max(5, len(str(nz)))

    for k in range(nz):
        j = nz - 1 - k if flipped else k                        # slice of volume.data written as slice k
        x = Dataset()
        _set_study_and_series(x, series)
        _set_image_attributes(x, series)
        sop_uid = new_uid()
        x.SOPInstanceUID = sop_uid
        x.InstanceNumber = str(k + 1)
        x.ImagePositionPatient = [ds(v) for v in series.origin + series.direction[:, 2] * float(g.spacing[2]) * k]
        if sources:
            item = _source_reference(sources, j, nz)
            if item is not None:
                x.SourceImageSequence = Sequence([item])
        x.PixelData = _pixel_bytes(data, j, plan)
        _save_slice(x, series.sop_class, sop_uid, folder / f"{k + 1:0{width}d}.dcm", k)


def _num(text: str) -> float:
    try:
        return float(str(text).split("\\")[0])
    except ValueError:
        return float("nan")


__all__ = ["write_series", "pixel_plan", "CT_STORAGE", "MR_STORAGE", "LOSSY_METHOD"]
