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


def write_series(volume: Volume, folder: Path) -> None:
    """Write ``volume`` as a DICOM series into the (existing, empty) ``folder``, one slice at a time."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence

    data = volume.data
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(f"DICOM output needs at least 2 slices of at least 2 x 2 pixels, got shape "
                         f"{tuple(data.shape)}; write NIfTI, NRRD or MHA instead")
    nx, ny, nz = data.shape
    if max(nx, ny) > 65535:
        raise InputError(f"DICOM slices have at most 65535 rows/columns, got {nx} x {ny}; write NIfTI instead")
    plan = pixel_plan(volume)
    g, flipped = _right_handed(volume.geometry, nz)
    src = volume.source if isinstance(volume.source, dict) else {}
    dicom_src = src.get("dicom") or {}
    kept: dict[str, str] = {str(k).lower(): str(v) for k, v in (dicom_src.get("tags") or {}).items()}
    sources = [s for s in (dicom_src.get("sources") or []) if isinstance(s, (list, tuple)) and len(s) >= 2]
    lossy = src.get("lossy") or {}
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
    width = max(5, len(str(nz)))

    def common(x: Dataset) -> None:
        if charset:
            x.SpecificCharacterSet = charset
        x.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if modality == "CT" else "OTHER"]
        x.SOPClassUID = sop_class
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
        x.StudyInstanceUID = study_uid
        # General Series
        x.Modality = modality
        x.SeriesInstanceUID = series_uid
        x.SeriesNumber = series_number
        x.SeriesDescription = series_desc[:64]
        x.PatientPosition = ""
        x.Laterality = ""
        # Frame of Reference, General Equipment
        x.FrameOfReferenceUID = frame_uid
        x.PositionReferenceIndicator = ""
        x.Manufacturer = ""
        # General Image: how it was derived
        x.DerivationDescription = (DERIVATION if not fallback_from
                                   else f"{DERIVATION}; a {fallback_from} source stored as MR Image")
        x.DerivationCodeSequence = Sequence([_code("113040", "DCM", "Lossy Compression")])
        x.LossyImageCompression = "01"
        ratio = lossy.get("lossy_ratio")
        if ratio is not None and float(ratio) > 0:
            x.LossyImageCompressionRatio = ds(float(ratio))
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
        if modality == "CT" or (plan["slope"], plan["intercept"]) != (1.0, 0.0):
            # Type 1 in CT; not part of the classic MR IOD, but read by every MR tool when present
            x.RescaleIntercept = ds(plan["intercept"])
            x.RescaleSlope = ds(plan["slope"])
        if modality == "CT":
            x.RescaleType = "HU" if (volume.intensity.units or "").upper() == "HU" else "US"
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
        x.WindowCenter = ds((p_lo + p_hi) / 2)
        x.WindowWidth = ds(max(p_hi - p_lo, 1.0))
        for key in copy_keys:                      # the reader's kept values win over the defaults above
            if key in kept:
                el = _element(key, kept[key])
                if el is not None:
                    x[el.tag] = el
        if "0018|0050" in kept and abs(_num(kept["0018|0050"]) - float(g.spacing[2])) > 0.5 * float(g.spacing[2]):
            x.SliceThickness = ds(g.spacing[2])     # a resampled decode: the old thickness no longer holds
        if not identity_kept and dicom_src:
            x.PatientIdentityRemoved = "YES"
            x.DeidentificationMethod = ("inrv: patient and study identity removed (PS3.15 E.1-1 basic profile "
                                        "attributes); acquisition attributes and source image UIDs kept")[:64]

    convert = plan["convert"]
    for k in range(nz):
        j = nz - 1 - k if flipped else k                        # slice of volume.data written as slice k
        x = Dataset()
        common(x)
        sop_uid = new_uid()
        x.SOPInstanceUID = sop_uid
        x.InstanceNumber = str(k + 1)
        x.ImagePositionPatient = [ds(v) for v in origin + d[:, 2] * float(g.spacing[2]) * k]
        if sources:
            n_src = len(sources)
            i = j if n_src == nz else int(round(j * (n_src - 1) / max(1, nz - 1)))
            ref = sources[min(max(i, 0), n_src - 1)]
            item = Dataset()
            item.ReferencedSOPClassUID = str(ref[0])
            item.ReferencedSOPInstanceUID = str(ref[1])
            if len(ref) > 2 and int(ref[2] or 0) > 0:
                item.ReferencedFrameNumber = str(int(ref[2]))
            item.PurposeOfReferenceCodeSequence = Sequence([_code("121320", "DCM", "Uncompressed predecessor")])
            if item.ReferencedSOPClassUID and item.ReferencedSOPInstanceUID:
                x.SourceImageSequence = Sequence([item])
        plane = convert(np.asarray(data[:, :, j]))
        x.PixelData = np.ascontiguousarray(plane.T).astype("<" + np.dtype(plan["dtype"]).str[1:]).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = EXPLICIT_VR_LE
        x.file_meta = meta
        try:
            x.save_as(folder / f"{k + 1:0{width}d}.dcm", enforce_file_format=True)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - pydicom refusing a value: one line, never a traceback
            raise RunError(f"cannot write DICOM slice {k + 1}: {' '.join(str(e).split())[:160]}") from None


def _num(text: str) -> float:
    try:
        return float(str(text).split("\\")[0])
    except ValueError:
        return float("nan")


__all__ = ["write_series", "pixel_plan", "CT_STORAGE", "MR_STORAGE", "LOSSY_METHOD"]
