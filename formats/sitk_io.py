"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) in and out, through SimpleITK.

Both formats store spacing, origin and direction in LPS (ITK's model, the same as ``Geometry``), so
geometry is copied as is. Neither has a rescale slope/intercept: a file read here has ``slope=1,
intercept=0``, and a volume whose intensity has another slope/intercept (e.g. from a scaled NIfTI or a CT
DICOM) is written as *physical* values (``stored * slope + intercept``): in the stored dtype when the
results are integers that fit it, else int16/int32 when integral, else float32 (float64 for float64).
Only single-file outputs are written (``.nrrd``, ``.mha``); ``.nhdr``/``.mhd`` are read-only (a detached data file cannot be written
atomically). Free-text metadata of these files (NRRD ``content``, MetaImage comments) is not kept.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError, RunError
from .nifti import squeeze_to_3d
from .volume import SUPPORTED_DTYPES, Geometry, Intensity, Volume

_IO_NAMES = {"nrrd": "NrrdImageIO", "mha": "MetaImageIO"}


def _sitk():
    import SimpleITK

    return SimpleITK


def sitk_reason(e: BaseException) -> str:
    """One readable line out of a multi-line ITK/SimpleITK exception."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    idx = next((i for i, ln in enumerate(lines) if "ERROR:" in ln), None)
    if idx is None:
        main = lines[-1] if lines else type(e).__name__
    else:
        main = re.sub(r"^.*?ERROR:\s*", "", lines[idx])
        main = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", main)
        rest = [ln for ln in lines[idx + 1:] if not ln.startswith("Reason: Success")]
        if main.endswith(":") and rest:  # NRRD puts the real reason on the last line
            tail = re.sub(r"^(\[\w+\]\s*\w+:\s*)+", "", rest[-1])
            main = f"{main} {tail}"
    main = re.sub(r'"[^"]{24,}"', '"..."', main)  # quoted garbage from random bytes
    main = "".join(ch if ch.isprintable() else "?" for ch in main)
    return " ".join(main.split())[:200] or type(e).__name__


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's warnings on stderr (e.g. GDCM's "No Series were found") while inrv asks questions
    whose failures it reports itself; the previous setting is restored."""
    po = _sitk().ProcessObject
    before = po.GetGlobalWarningDisplay()
    po.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        po.SetGlobalWarningDisplay(before)


def image_to_array(img, what: str) -> np.ndarray:
    """(x, y, z)-ordered numpy copy of a 3D scalar SimpleITK image, dtype checked."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what}: vector/RGB pixels ({img.GetNumberOfComponentsPerPixel()} components) "
                         "are not supported")
    arr = _sitk().GetArrayViewFromImage(img)
    if arr.dtype.kind == "c" or arr.dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"{what}: voxel type {arr.dtype.name} is not supported "
                         f"(supported: {', '.join(SUPPORTED_DTYPES)})")
    # a real copy: the view dies with ``img`` (ascontiguousarray would return the view itself when the
    # transposed view happens to be contiguous, e.g. for shape (1, 1, n))
    return np.array(arr.transpose(2, 1, 0), order="C", copy=True)


def geometry_of(img) -> Geometry:
    return Geometry(tuple(float(v) for v in img.GetSpacing()), tuple(float(v) for v in img.GetOrigin()),
                    tuple(float(v) for v in img.GetDirection()))


def array_to_image(data: np.ndarray, g: Geometry):
    sitk = _sitk()
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(v) for v in g.spacing))
    img.SetOrigin(tuple(float(v) for v in g.origin))
    img.SetDirection(tuple(float(v) for v in g.direction))
    return img


def read_sitk(path: Path, kind: str) -> Volume:
    """Read an NRRD (``kind="nrrd"``) or MetaImage (``kind="mha"``) file."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO(_IO_NAMES[kind])
    reader.SetFileName(str(path))
    label = "NRRD" if kind == "nrrd" else "MetaImage"
    _check_magic(path, kind, label)
    try:
        with quiet_itk():
            reader.ReadImageInformation()
        size = tuple(reader.GetSize())
        squeeze_to_3d(size, str(path))
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"{path}: vector/RGB pixels ({reader.GetNumberOfComponents()} components) "
                             "are not supported")
        with quiet_itk():
            img = reader.Execute()
    except InputError:
        raise
    except RuntimeError as e:
        raise InputError(f"{path}: cannot read as {label}: {sitk_reason(e)}") from None
    if img.GetDimension() == 4:  # (x, y, z, 1): keep the 3D volume
        img = img[:, :, :, 0]
    data = image_to_array(img, str(path))
    lo, hi = _range(data)
    return Volume(data=data, geometry=geometry_of(img),
                  intensity=Intensity(dtype=data.dtype.name, slope=1.0, intercept=0.0, units=None, min=lo, max=hi),
                  source={"kind": kind})


def _check_magic(path: Path, kind: str, label: str) -> None:
    """Refuse files that cannot be NRRD/MetaImage before ITK prints its own parse errors on stderr."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from None
    ok = head.startswith(b"NRRD") if kind == "nrrd" else re.match(rb"\s*[A-Za-z_]+\s*=", head) is not None
    if not ok:
        raise InputError(f"{path}: not {'an' if kind == 'nrrd' else 'a'} {label} file")


def _range(data: np.ndarray) -> tuple[float, float]:
    vals = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    if vals.size == 0:
        return 0.0, 0.0
    return float(vals.min()), float(vals.max())


def physical_values(data: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``data * slope + intercept`` in the smallest faithful dtype (stored dtype, int16/int32, float32)."""
    if (slope, intercept) == (1.0, 0.0):
        return data
    phys = data.astype(np.float64) * slope + intercept
    if np.all(np.isfinite(phys)) and np.array_equal(phys, np.rint(phys)):
        lo, hi = (phys.min(), phys.max()) if phys.size else (0.0, 0.0)
        candidates = [data.dtype] if data.dtype.kind in "iu" else []
        for dt in candidates + [np.dtype(np.int16), np.dtype(np.int32)]:
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return phys.astype(dt)
    return phys if data.dtype == np.float64 else phys.astype(np.float32)


def write_sitk(volume: Volume, path: Path, kind: str) -> None:
    """Write ``volume`` as a compressed single-file NRRD or MHA at ``path``."""
    sitk = _sitk()
    it = volume.intensity
    data = physical_values(volume.data, float(it.slope), float(it.intercept))
    img = array_to_image(data, volume.geometry)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(_IO_NAMES[kind])
    writer.SetFileName(str(path))
    writer.UseCompressionOn()
    try:
        with quiet_itk():
            writer.Execute(img)
    except RuntimeError as e:
        raise RunError(f"cannot write {path}: {sitk_reason(e)}") from None


__all__ = ["read_sitk", "write_sitk", "image_to_array", "array_to_image", "geometry_of", "sitk_reason", "quiet_itk",
           "physical_values"]
