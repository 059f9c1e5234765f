"""DICOM series (a folder of single-frame slices) in and out, through SimpleITK/GDCM.

Reading
    The folder must hold exactly one series (``GetGDCMSeriesIDs``; subfolders are not searched); a path to
    one ``.dcm`` file reads the series it belongs to. Slices must be evenly spaced along the slice normal
    (no gaps, no gantry tilt) or the read fails with ``InputError``. GDCM hands back *rescaled* values;
    when every slice has the same RescaleSlope/RescaleIntercept, the stored integers are recovered
    exactly (``(value - intercept) / slope``, in the dtype given by BitsAllocated/PixelRepresentation) and
    ``Volume.data`` holds them, with the slope/intercept in ``Volume.intensity``. Otherwise (per-slice
    rescale) the rescaled values are kept: int16 (or int32) when integral, else float32, slope 1,
    intercept 0. ``units`` is ``"HU"`` for CT (or the RescaleType when it names a unit).

    ``Volume.source["dicom"]["tags"]`` keeps a small allow-list of tags (SimpleITK ``"gggg|eeee"`` keys):
    always Modality; with ``keep_private=True`` also the patient/study identity tags listed in
    ``PRIVATE_TAGS`` (names, IDs, dates, Study and Frame of Reference UIDs ...).

Writing (a folder of ``00001.dcm`` ...)
    A derived, lossy series: ImageType ``DERIVED\\SECONDARY``; LossyImageCompression (0028,2110) ``"01"``,
    LossyImageCompressionMethod (0028,2114) ``"INRV"``, LossyImageCompressionRatio (0028,2112) when the
    caller put ``lossy_ratio`` in ``Volume.source["lossy"]``; a DerivationDescription; Modality from the
    source (else ``"CT"`` for Hounsfield units and ``"MR"`` otherwise, so that viewers get PixelSpacing and the
    patient geometry: ``"OT"`` would make a Secondary Capture image without them). UIDs: a new Series Instance UID shared by all slices and a new SOP Instance UID
    per slice; the Study and Frame of Reference UIDs are the source's when they were kept
    (``keep_private=True``: the derived series joins the original study and stays registered with it),
    otherwise new ones shared by all slices. Per slice: ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, SliceThickness/SpacingBetweenSlices, InstanceNumber, RescaleSlope/Intercept.
    Integer volumes are written as their stored values with the volume's slope/intercept; float volumes are
    quantised to int16 with a slope/intercept spanning their range (DICOM CT/MR pixels are integers).
    Volumes thinner than 2 voxels along any axis are refused (a single DICOM image reads back as 2D, and
    GDCM cannot assemble single-row slices).
    DICOM slices can only describe a right-handed frame (the slice normal is row x column): a left-handed
    volume is written with its slice order reversed (same voxels in space, z axis flipped).
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, RunError
from .nifti import squeeze_to_3d
from .sitk_io import geometry_of, image_to_array, quiet_itk, sitk_reason
from .volume import Geometry, Intensity, Volume

PUBLIC_TAGS = {"0008|0060": "Modality"}
PRIVATE_TAGS = {
    "0010|0010": "PatientName", "0010|0020": "PatientID", "0010|0030": "PatientBirthDate",
    "0010|0040": "PatientSex", "0010|1010": "PatientAge", "0020|000d": "StudyInstanceUID",
    "0020|0052": "FrameOfReferenceUID", "0020|0010": "StudyID", "0008|0020": "StudyDate",
    "0008|0030": "StudyTime", "0008|0050": "AccessionNumber", "0008|1030": "StudyDescription",
    "0008|103e": "SeriesDescription", "0008|0090": "ReferringPhysicianName", "0008|0080": "InstitutionName",
}
# copied onto a written series when present in Volume.source["dicom"]["tags"] (kept only with keep_private)
_COPY_ON_WRITE = ("0010|0010", "0010|0020", "0010|0030", "0010|0040", "0010|1010", "0020|0010", "0008|0020",
                  "0008|0030", "0008|0050", "0008|1030", "0008|0090", "0008|0080")
_STORED_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16,
                  (32, 0): np.uint32, (32, 1): np.int32}


def _sitk():
    import SimpleITK

    return SimpleITK


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


# --------------------------------------------------------------------------------------------- reading
def _series_files(path: Path) -> list[str]:
    sitk = _sitk()
    reader = sitk.ImageSeriesReader
    if path.is_file():
        info = sitk.ImageFileReader()
        info.SetFileName(str(path))
        info.SetImageIO("GDCMImageIO")
        try:
            with quiet_itk():
                info.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"{path}: not a DICOM file") from None
        uid = info.GetMetaData("0020|000e").strip() if info.HasMetaDataKey("0020|000e") else ""
        with quiet_itk():
            files = list(reader.GetGDCMSeriesFileNames(str(path.parent), uid)) if uid else []
        return files or [str(path)]
    with quiet_itk():
        ids = reader.GetGDCMSeriesIDs(str(path))
    if not ids:
        raise InputError(f"{path}: no DICOM series found in this folder (subfolders are not searched)")
    if len(ids) > 1:
        raise InputError(f"{path}: the folder holds {len(ids)} DICOM series; pass a folder with one series")
    with quiet_itk():
        return list(reader.GetGDCMSeriesFileNames(str(path), ids[0]))


def _float_tag(reader, i: int, key: str, default: float) -> float:
    if not reader.HasMetaDataKey(i, key):
        return default
    try:
        return float(reader.GetMetaData(i, key).strip().split("\\")[0])
    except ValueError:
        return default


def _check_spacing(reader, n: int, img, where: Path) -> None:
    """Slices evenly spaced along the normal, no tilt (ITK would silently assume it)."""
    if n < 3:
        return
    pos = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return
        try:
            pos.append([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")[:3]])
        except ValueError:
            return
    p = np.asarray(pos)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    normal = d[:, 2]
    steps = np.diff(p, axis=0)
    along = steps @ normal
    spacing = float(np.median(np.abs(along)))
    if spacing <= 0 or np.max(np.abs(np.abs(along) - spacing)) > 0.01 * spacing + 1e-4:
        raise InputError(f"{where}: DICOM slices are not evenly spaced (missing slices?); not supported")
    sideways = steps - np.outer(along, normal)
    if np.max(np.linalg.norm(sideways, axis=1)) > 0.01 * spacing + 1e-4:
        raise InputError(f"{where}: DICOM slices are sheared (gantry tilt); not supported")


def read_dicom(path: Path, *, keep_private: bool = False) -> Volume:
    """Read the DICOM series in folder ``path`` (or the series of the file ``path``)."""
    sitk = _sitk()
    files = _series_files(path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetImageIO("GDCMImageIO")
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        with quiet_itk():
            img = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"{path}: cannot read DICOM series: {sitk_reason(e)}") from None
    size = tuple(img.GetSize())
    if len(files) == 1 and (img.GetDimension() == 2 or size[2:3] == (1,)):
        raise InputError(f"{path}: a single 2D DICOM image; 2D images are not supported, inrv needs a 3D volume")
    squeeze_to_3d(size, str(path))
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    cols, rows = int(_float_tag(reader, 0, "0028|0011", 0)), int(_float_tag(reader, 0, "0028|0010", 0))
    if cols and rows and tuple(img.GetSize()[:2]) != (cols, rows):  # e.g. single-row slices
        raise InputError(f"{path}: DICOM slices of {cols} x {rows} pixels could not be assembled into a volume")
    _check_spacing(reader, len(files), img, path)
    values = image_to_array(img, str(path))

    n = len(files)
    slopes = {_float_tag(reader, i, "0028|1053", 1.0) for i in range(n)}
    inters = {_float_tag(reader, i, "0028|1052", 0.0) for i in range(n)}
    bits = int(_float_tag(reader, 0, "0028|0100", 16))
    rep = int(_float_tag(reader, 0, "0028|0103", 0))
    data, slope, inter = None, 1.0, 0.0
    if len(slopes) == 1 and len(inters) == 1 and (bits, rep) in _STORED_DTYPES:
        s, b = slopes.pop(), inters.pop()
        if s != 0:
            data = _unrescale(values, s, b, np.dtype(_STORED_DTYPES[(bits, rep)]))
            if data is not None:
                slope, inter = s, b
    if data is None:  # per-slice rescale: keep the rescaled values
        data = _compact(values)

    def tag(key: str) -> str | None:
        return reader.GetMetaData(0, key).strip() if reader.HasMetaDataKey(0, key) else None

    tags: dict[str, str] = {}
    for key in list(PUBLIC_TAGS) + (list(PRIVATE_TAGS) if keep_private else []):
        v = tag(key)
        if v:  # empty values carry nothing
            tags[key] = v
    modality = (tags.get("0008|0060") or "").upper()
    rescale_type = (tag("0028|1054") or "").upper()
    units = "HU" if modality == "CT" or rescale_type == "HU" else (
        rescale_type if rescale_type not in ("", "US") else None)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    return Volume(data=data, geometry=geometry_of(img),
                  intensity=Intensity(dtype=data.dtype.name, slope=float(slope), intercept=float(inter),
                                      units=units, min=lo, max=hi),
                  source={"kind": "dicom", "dicom": {"tags": tags}})


def _unrescale(values: np.ndarray, slope: float, inter: float, dtype: np.dtype) -> np.ndarray | None:
    """The stored integers ``(values - inter) / slope`` in ``dtype``, or None when they are not integers in
    its range. Works in chunks of about 4 M voxels so a 512^3 CT does not need several float64 copies."""
    out = np.empty(values.shape, dtype=dtype)
    info = np.iinfo(dtype)
    step = max(1, (4 << 20) // max(1, values[0].size))
    for x0 in range(0, values.shape[0], step):
        raw = (values[x0:x0 + step].astype(np.float64) - inter) / slope
        rounded = np.rint(raw)
        if (np.max(np.abs(raw - rounded)) >= 1e-3 or rounded.min() < info.min or rounded.max() > info.max):
            return None
        out[x0:x0 + step] = rounded
    return out


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


# --------------------------------------------------------------------------------------------- writing
def _right_handed(g: Geometry, nz: int) -> tuple[Geometry, bool]:
    """The geometry to write and whether the slice order is reversed (left-handed input)."""
    d = np.asarray(g.direction, dtype=np.float64).reshape(3, 3).copy()
    if np.linalg.det(d) >= 0:
        return g, False
    origin = np.asarray(g.origin, dtype=np.float64) + d[:, 2] * float(g.spacing[2]) * (nz - 1)
    d[:, 2] *= -1
    return Geometry(tuple(g.spacing), tuple(origin.tolist()), tuple(d.ravel().tolist())), True


def _pixel_plan(volume: Volume) -> tuple[int, int, float, float, Callable[[np.ndarray], np.ndarray]]:
    """(bits, pixel representation, slope, intercept, slice -> physical float64 values to hand to GDCM).

    GDCM stores ``rint((physical - intercept) / slope)`` in the declared integer type."""
    data, it = volume.data, volume.intensity
    s0, b0 = float(it.slope) or 1.0, float(it.intercept)
    if data.dtype.kind in "iu":
        bits = data.dtype.itemsize * 8
        rep = 1 if data.dtype.kind == "i" else 0
        return bits, rep, s0, b0, lambda sl: sl.astype(np.float64) * s0 + b0
    finite = data[np.isfinite(data)]
    lo = float(finite.min()) * s0 + b0 if finite.size else 0.0
    hi = float(finite.max()) * s0 + b0 if finite.size else 0.0
    lo, hi = min(lo, hi), max(lo, hi)
    slope = float(ds((hi - lo) / 65535.0)) if hi > lo else 1.0
    inter = float(ds(lo + 32768.0 * slope))

    def to_phys(sl: np.ndarray) -> np.ndarray:
        phys = np.nan_to_num(sl.astype(np.float64) * s0 + b0, nan=lo, posinf=hi, neginf=lo)
        stored = np.clip(np.rint((phys - inter) / slope), -32768, 32767)
        return stored * slope + inter

    return 16, 1, slope, inter, to_phys


def write_dicom(volume: Volume, folder: Path) -> None:
    """Write ``volume`` as a DICOM series into the (existing, empty) ``folder``, one slice at a time."""
    sitk = _sitk()
    data = volume.data
    nz = data.shape[2]
    if min(data.shape) < 2:
        raise InputError(f"DICOM output needs at least 2 slices of at least 2 x 2 pixels, got shape "
                         f"{tuple(data.shape)}; write NIfTI, NRRD or MHA instead")
    bits, rep, slope, inter, to_phys = _pixel_plan(volume)
    g, flipped = _right_handed(volume.geometry, nz)
    src = volume.source if isinstance(volume.source, dict) else {}
    kept = dict((src.get("dicom") or {}).get("tags") or {})
    lossy = src.get("lossy") or {}
    # Modality from the source; else CT for Hounsfield units, MR otherwise (NIfTI/NRRD/MHA sources carry no
    # modality). Not "OT": GDCM then writes Secondary Capture, which has no PixelSpacing and no geometry.
    default_modality = "CT" if (volume.intensity is not None and volume.intensity.units == "HU") else "MR"
    modality = (kept.get("0008|0060") or default_modality).strip() or default_modality
    d = np.asarray(g.direction, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(g.origin, dtype=np.float64)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    desc = kept.get("0008|103e")
    shared: dict[str, str] = {
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|0060": modality,
        "0008|0021": date, "0008|0031": time,
        "0008|103e": (f"{desc} (inrv)" if desc else "inrv decoded")[:64],
        "0008|2111": "Lossy compression with inrv (neural implicit representation)",
        "0020|000d": kept.get("0020|000d") or new_uid(),
        "0020|000e": new_uid(),
        "0020|0052": kept.get("0020|0052") or new_uid(),
        "0020|0011": "1",
        "0020|0037": "\\".join(ds(v) for v in (*d[:, 0], *d[:, 1])),
        "0018|0050": ds(g.spacing[2]), "0018|0088": ds(g.spacing[2]),
        "0028|0100": str(bits), "0028|0101": str(bits), "0028|0102": str(bits - 1), "0028|0103": str(rep),
        "0028|1053": ds(slope), "0028|1052": ds(inter),
        "0028|1054": "HU" if (volume.intensity.units or "").upper() == "HU" else "US",
        "0028|2110": "01", "0028|2114": "INRV",
    }
    ratio = lossy.get("lossy_ratio")
    if ratio is not None:
        shared["0028|2112"] = ds(ratio)
    for key in _COPY_ON_WRITE:
        if kept.get(key):
            shared[key] = kept[key]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    width = max(5, len(str(nz)))
    for k in range(nz):
        plane = data[:, :, nz - 1 - k if flipped else k]
        sl = sitk.GetImageFromArray(np.ascontiguousarray(to_phys(plane).T))  # size (x, y)
        sl.SetSpacing((float(g.spacing[0]), float(g.spacing[1])))
        for key, value in shared.items():
            sl.SetMetaData(key, value)
        pos = origin + d[:, 2] * float(g.spacing[2]) * k
        sl.SetMetaData("0020|0032", "\\".join(ds(v) for v in pos))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", new_uid())
        sl.SetMetaData("0008|0012", date)
        sl.SetMetaData("0008|0013", time)
        writer.SetFileName(str(folder / f"{k + 1:0{width}d}.dcm"))
        try:
            with quiet_itk():
                writer.Execute(sl)
        except RuntimeError as e:
            raise RunError(f"cannot write DICOM slice {k + 1}: {sitk_reason(e)}") from None


def dicom_summary(source: dict[str, Any]) -> dict[str, str]:
    """Readable names of the kept tags (for ``inrv info``)."""
    names = {**PUBLIC_TAGS, **PRIVATE_TAGS}
    tags = (source.get("dicom") or {}).get("tags") or {}
    return {names.get(k, k): v for k, v in tags.items()}


__all__ = ["read_dicom", "write_dicom", "new_uid", "ds", "PUBLIC_TAGS", "PRIVATE_TAGS", "dicom_summary"]
