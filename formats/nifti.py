"""NIfTI-1 / NIfTI-2 (``.nii``, ``.nii.gz``; ``.hdr/.img`` pairs are read too) in and out, through nibabel.

Why nibabel and not SimpleITK: SimpleITK applies ``scl_slope/scl_inter`` and promotes int16 to float32,
rewrites qform/sform with its own codes and drops ``intent_*``. Here a NIfTI comes back as the same NIfTI:

* Reading keeps the stored (unscaled) values in their on-disk dtype, the slope/intercept, and the raw
  348-byte (NIfTI-1) or 540-byte (NIfTI-2) header exactly as it is in the file, in
  ``Volume.source["nifti_header"]``. Free-text fields that can carry names (``descrip``, ``aux_file``,
  ``db_name``, ``data_type`` and NIfTI-2's ``unused_str``) are blanked unless ``keep_private=True``.
  ``intent_name`` is kept: it is part of the intent triple (code, parameters, name) that tools rely on.
  Header extensions are never kept (they are where vendor text and PHI usually hide).
* ``Volume.geometry`` (LPS) is derived from the header (nibabel's best affine: sform if its code is set,
  else qform, else pixdim) by flipping x and y (RAS -> LPS), so NRRD/MHA/DICOM writers get the geometry.
* Writing with a kept header writes that header back byte for byte; it changes only what the volume
  changed: dtype, shape, slope/intercept, and qform/sform when the volume's geometry differs from the one
  the header gives (e.g. a decode at another resolution). The file is always single-file
  (magic ``n+1``/``n+2``, ``vox_offset`` 352/544, no extensions).
* Writing without a kept header builds one from the geometry: qform and sform code 1 (scanner), both the
  same rigid affine, units mm, ``scl_slope/scl_inter`` from ``Volume.intensity`` when not (1, 0).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .volume import SUPPORTED_DTYPES, Geometry, Intensity, Volume

# header fields blanked unless keep_private (those present in the header class are blanked)
PRIVATE_FIELDS = ("descrip", "aux_file", "db_name", "data_type", "unused_str")
_LPS = np.diag([-1.0, -1.0, 1.0])   # RAS <-> LPS (its own inverse)
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}


def _nib():
    import nibabel

    return nibabel


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def _header_class(raw: bytes):
    nib = _nib()
    size_le = int.from_bytes(raw[:4], "little")
    size_be = int.from_bytes(raw[:4], "big")
    if 540 in (size_le, size_be):
        return nib.Nifti2Header, 540
    if 348 in (size_le, size_be):
        return nib.Nifti1Header, 348
    raise InputError("not a NIfTI file (bad sizeof_hdr)")


def header_from_bytes(raw: bytes):
    """A nibabel header object for the kept bytes (no fixing: the bytes stay as they were)."""
    klass, n = _header_class(raw)
    if len(raw) != n:
        raise InputError(f"kept NIfTI header has {len(raw)} bytes, expected {n}")
    return klass(binaryblock=raw, check=False)


def squeeze_to_3d(shape: tuple[int, ...], what: str = "image") -> tuple[int, int, int]:
    """The 3D shape of a header/image shape; trailing singleton axes (x, y, z, 1) are dropped.

    2D and true 4D+ inputs raise ``InputError`` (never a silent slice)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise InputError(f"{what}: 4D volumes are not supported yet (shape {shape})")
    if len(shape) < 3:
        raise InputError(f"{what}: {len(shape)}D images are not supported; inrv needs a 3D volume "
                         f"(shape {shape})")
    if min(shape) < 1:
        raise InputError(f"{what}: empty volume (shape {shape})")
    return shape  # type: ignore[return-value]


def geometry_from_header(hdr) -> Geometry:
    """LPS geometry (ITK convention) from a NIfTI header: best affine, RAS -> LPS, spatial units -> mm.

    A sheared/scaled sform cannot be expressed as spacing + direction: its direction is replaced by the
    nearest orthonormal matrix (polar decomposition); the kept header still restores the sform exactly."""
    aff = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    try:
        unit = hdr.get_xyzt_units()[0]
    except Exception:  # noqa: BLE001 - odd unit codes: treat as mm
        unit = "mm"
    scale = _UNIT_TO_MM.get(unit, 1.0)
    m = _LPS @ aff[:3, :3] * scale
    t = _LPS @ aff[:3, 3] * scale
    spacing = np.linalg.norm(m, axis=0)
    if not np.all(np.isfinite(m)) or not np.all(np.isfinite(t)) or np.any(spacing <= 0):
        raise InputError("NIfTI header has an invalid affine (zero, NaN or infinite voxel size)")
    d = m / spacing
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        u, _, vt = np.linalg.svd(d)
        d = u @ vt
    return Geometry(tuple(float(v) for v in spacing), tuple(float(v) for v in t),
                    tuple(float(v) for v in d.ravel()))


def affine_from_geometry(g: Geometry) -> np.ndarray:
    """The RAS voxel-to-world 4x4 affine of an LPS geometry."""
    d = np.asarray(g.direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = _LPS @ (d * np.asarray(g.spacing, dtype=np.float64))
    aff[:3, 3] = _LPS @ np.asarray(g.origin, dtype=np.float64)
    return aff


def _read_raw_header(path: Path) -> bytes:
    nib = _nib()
    with nib.openers.ImageOpener(str(path)) as f:
        raw = f.read(540)
    if len(raw) < 348:
        raise InputError(f"{path}: not a NIfTI file (too short)")
    try:
        _, n = _header_class(raw)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    return raw[:n]


def _check_dtype(dtype: np.dtype, what: str) -> np.dtype:
    if dtype.fields is not None or dtype.kind not in "uif" or dtype.newbyteorder("=").name not in SUPPORTED_DTYPES:
        name = "RGB/structured" if dtype.fields is not None else dtype.newbyteorder("=").name
        raise InputError(f"{what}: voxel type {name} is not supported "
                         f"(supported: {', '.join(SUPPORTED_DTYPES)})")
    return dtype.newbyteorder("=")


def read_nifti(path: Path, *, keep_private: bool = False) -> Volume:
    """Read a ``.nii``/``.nii.gz`` file (see the module docstring for what is kept)."""
    nib = _nib()
    try:
        raw = _read_raw_header(path)
        img = nib.load(str(path))
    except InputError:
        raise
    except Exception as e:  # nibabel raises many types (ImageFileError, HeaderDataError, EOFError ...)
        raise InputError(f"{path}: cannot read as NIfTI: {_one_line(e)}") from None
    if not isinstance(img, (nib.Nifti1Pair, nib.Nifti2Pair)):  # the *Image classes are subclasses
        raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
    hdr = img.header
    shape = squeeze_to_3d(hdr.get_data_shape(), str(path))
    dtype = _check_dtype(np.dtype(hdr.get_data_dtype()), str(path))
    try:
        stored = np.asarray(img.dataobj.get_unscaled())
        data = np.array(stored.reshape(shape), dtype=dtype, order="C")
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    except Exception as e:  # truncated gzip, short file, mmap errors
        raise InputError(f"{path}: truncated or corrupt NIfTI data: {_one_line(e)}") from None
    if not (np.isfinite(slope) and np.isfinite(inter)):
        slope, inter = 1.0, 0.0
    geometry = geometry_from_header(hdr)

    kept = header_from_bytes(raw)
    if not keep_private:
        names = kept.keys()
        for field in PRIVATE_FIELDS:
            if field in names:
                kept[field] = b""
    kind = "nifti2" if len(raw) == 540 else "nifti1"
    lo, hi = _finite_range(data)
    intensity = Intensity(dtype=dtype.name, slope=slope, intercept=inter, units=None, min=lo, max=hi)
    return Volume(data=data, geometry=geometry, intensity=intensity,
                  source={"kind": kind, "nifti_header": bytes(kept.binaryblock)})


def _finite_range(data: np.ndarray) -> tuple[float, float]:
    if data.size == 0:
        return 0.0, 0.0
    if data.dtype.kind == "f":
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            return 0.0, 0.0
        return float(finite.min()), float(finite.max())
    return float(data.min()), float(data.max())


def _geometry_close(a: Geometry, b: Geometry) -> bool:
    return (np.allclose(a.spacing, b.spacing, rtol=1e-6, atol=1e-6)
            and np.allclose(a.origin, b.origin, rtol=1e-6, atol=1e-5)
            and np.allclose(a.direction, b.direction, atol=1e-6))


def build_header(volume: Volume):
    """The NIfTI header to write for ``volume``: the kept one (updated where the volume differs) or a new one."""
    nib = _nib()
    data = volume.data
    it = volume.intensity
    raw = volume.source.get("nifti_header") if isinstance(volume.source, dict) else None
    aff = affine_from_geometry(volume.geometry)
    if raw:
        hdr = header_from_bytes(bytes(raw))
        if np.dtype(hdr.get_data_dtype()).newbyteorder("=") != data.dtype:
            hdr.set_data_dtype(data.dtype)
        try:
            old_shape = squeeze_to_3d(hdr.get_data_shape())
        except InputError:
            old_shape = None
        if old_shape != tuple(data.shape):
            hdr.set_data_shape(data.shape)
        if _slope_inter(hdr) != (float(it.slope), float(it.intercept)):
            hdr["scl_slope"], hdr["scl_inter"] = it.slope, it.intercept
        if old_shape != tuple(data.shape) or not _geometry_close(geometry_from_header(hdr), volume.geometry):
            qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
            if not qcode and not scode:  # pixdim-only header: say where the voxels are, as a new header does
                qcode = scode = 1
            hdr.set_xyzt_units("mm", hdr.get_xyzt_units()[1])
            if qcode:
                hdr.set_qform(aff, code=qcode)  # also sets pixdim
            if scode:
                hdr.set_sform(aff, code=scode)
            hdr["pixdim"][1:4] = volume.geometry.spacing
        magic, offset = (b"n+2", 544) if isinstance(hdr, nib.Nifti2Header) else (b"n+1", 352)
        if hdr["magic"].item() != magic:
            hdr["magic"] = magic
        if int(hdr["vox_offset"]) != offset:
            hdr["vox_offset"] = offset
        return hdr
    klass = nib.Nifti2Header if max(data.shape) > 32767 else nib.Nifti1Header
    hdr = klass()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    hdr.set_xyzt_units("mm", "sec")
    if (float(it.slope), float(it.intercept)) != (1.0, 0.0):
        hdr["scl_slope"], hdr["scl_inter"] = it.slope, it.intercept
    hdr["vox_offset"] = 544 if klass is nib.Nifti2Header else 352
    return hdr


def _slope_inter(hdr) -> tuple[float, float]:
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if not np.isfinite(slope) or slope == 0:
        return 1.0, 0.0
    return slope, (inter if np.isfinite(inter) else 0.0)


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume`` as a single-file NIfTI at ``path`` (gzip when the name ends in ``.gz``)."""
    hdr = build_header(volume)
    out_dtype = np.dtype(hdr.get_data_dtype())  # carries the header's byte order
    block = bytes(hdr.binaryblock)
    offset = int(hdr["vox_offset"])
    pad = offset - len(block)
    body = np.asarray(volume.data, dtype=out_dtype).tobytes(order="F")
    payload: list[bytes] = [block, b"\x00" * pad, body]
    if str(path).endswith(".gz"):
        with open(path, "wb") as raw_f, gzip.GzipFile(filename="", mode="wb", fileobj=raw_f,
                                                        compresslevel=6, mtime=0) as f:
            for part in payload:
                f.write(part)
    else:
        with open(path, "wb") as f:
            for part in payload:
                f.write(part)


def header_summary(raw: bytes) -> dict[str, Any]:
    """A few readable facts of kept header bytes (for ``inrv info``)."""
    hdr = header_from_bytes(raw)
    return {"version": 2 if len(raw) == 540 else 1, "dtype": np.dtype(hdr.get_data_dtype()).name,
            "qform_code": int(hdr["qform_code"]), "sform_code": int(hdr["sform_code"]),
            "intent_code": int(hdr["intent_code"]), "slope_inter": list(_slope_inter(hdr))}


__all__ = ["read_nifti", "write_nifti", "build_header", "geometry_from_header", "affine_from_geometry",
           "header_from_bytes", "squeeze_to_3d", "header_summary", "PRIVATE_FIELDS"]
