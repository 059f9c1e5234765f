"""Shared test helpers: phantoms, tiny model configs, and one torch thread per test.

Test modules import the builders by name (``tests/`` is on ``pythonpath``, see pyproject.toml)::

    from conftest import ellipsoid_phantom, make_volume, PAPER_TINY

* Phantoms (no files outside ``tmp_path``, never the development data): :func:`phantom` (a smooth blob
  plus noise in a range typical of each dtype), :func:`ellipsoid_phantom` (uint8, background plus an
  inner structure, for the codec), :func:`make_volume` (a :class:`Volume` on an oblique grid),
  :func:`write_scaled_nifti` (a CT-like scaled NIfTI written by nibabel), :func:`write_pydicom_series`
  (a CT/MR series written with pydicom, independent of inrv's writer).
* :data:`PAPER_TINY`: the smallest paper-model networks (seconds on a CPU); add ``steps`` per test.
* The autouse fixture :func:`torch_threads` runs every test with one torch thread (results do not depend
  on the machine, and 2 shared cores are not oversubscribed) and restores the count afterwards, so a
  test that changes it cannot leak into the next one.

Markers: ``slow`` (more than a few seconds on 2 CPU cores). ``pytest -m "not slow"`` is the fast
subset for development; ``bash scripts/test.sh`` runs everything.
"""

from __future__ import annotations

import numpy as np
import pytest

from inrv.formats.volume import Geometry, Intensity, Volume

SHAPE = (13, 11, 7)          # odd, all different: catches axis-order mistakes
SPACING = (0.7, 0.9, 2.5)    # anisotropic

# the smallest paper-model networks; tests add steps (and block, ds ...) of their own
PAPER_TINY = dict(points_per_step=512, nc=2, sn=8, attn_width=8, attn_heads=2, attn_blocks=1, mlp_width=8,
                  res_blocks=1)


# --------------------------------------------------------------------------------------------- threads

def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The whole session runs with one torch thread (module-scoped fixtures that fit a model included);
    the original count is restored at the end. (Torch-free behaviour, e.g. ``inrv info``, is tested in
    subprocesses, so importing torch here hides nothing.)"""
    torch = _torch()
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def torch_threads(one_torch_thread):
    """Restores the torch thread count after each test, so a test that changes it cannot leak into the
    next one."""
    torch = _torch()
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- phantoms

def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_geometry(left_handed: bool = False) -> Geometry:
    d = rotation(0.3, -0.2, 0.45)
    if left_handed:
        d[:, 0] *= -1
    return Geometry(SPACING, (-100.3, 20.7, 55.1), tuple(float(v) for v in d.ravel()))


def phantom(dtype: str = "int16", shape=SHAPE, seed: int = 0) -> np.ndarray:
    """A smooth blob plus noise in a range typical of the dtype (CT HU for int16, with negatives)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = np.exp(-(x ** 2 + 2 * y ** 2 + 0.5 * z ** 2) * 2)
    noise = rng.standard_normal(shape)
    if dtype == "int16":      # CT: air -1024 .. bone ~ 1500
        v = -1024 + 2500 * blob + 30 * noise
        v[0, 0, 0], v[-1, -1, -1] = -1024, 3071
    elif dtype == "uint8":
        v = 200 * blob + 10 * noise + 20
        v[0, 0, 0], v[-1, -1, -1] = 0, 255
    elif dtype == "uint16":   # MR-like
        v = 4000 * blob + 50 * noise + 100
        v[-1, -1, -1] = 65535
    elif dtype == "float32":  # PET-like, large dynamic range
        return (1e4 * blob ** 4 + np.abs(noise)).astype(np.float32)
    else:
        raise ValueError(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(v), info.min, info.max).astype(dtype)


def ellipsoid_phantom(shape=(24, 22, 20), seed: int = 0) -> np.ndarray:
    """A uint8 volume with background, a smooth ellipsoid, an inner structure and mild noise."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = sum(a * a for a in g)
    vol = np.where(r < 0.8, 120 + 60 * g[0], 0.0)
    vol = vol + np.where((r < 0.25) & (g[1] > 0), 50.0, 0.0)
    vol = vol + np.where(r < 0.8, rng.normal(0, 2, shape), 0.0)
    return np.clip(np.rint(vol), 0, 255).astype(np.uint8)


def make_volume(dtype: str = "int16", *, left_handed: bool = False, source: dict | None = None,
                shape=SHAPE) -> Volume:
    """:func:`phantom` as a Volume on an oblique, anisotropic grid."""
    data = phantom(dtype, shape)
    units = "HU" if dtype == "int16" else None
    it = Intensity(dtype=dtype, slope=1.0, intercept=0.0, units=units, min=float(data.min()), max=float(data.max()))
    return Volume(data=data, geometry=oblique_geometry(left_handed), intensity=it,
                  source=source or {"kind": "array"})


def ras_affine(g: Geometry) -> np.ndarray:
    d = np.asarray(g.direction).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1, -1, 1]) @ (d * np.asarray(g.spacing))
    aff[:3, 3] = np.diag([-1, -1, 1]) @ np.asarray(g.origin)
    return aff


def write_scaled_nifti(path, *, descrip: bytes = b"PATIENT NAME HERE", version: int = 1) -> np.ndarray:
    """A CT-like scaled int16 NIfTI written by nibabel: scl_slope 0.5, scl_inter -1024, qform code 1 and
    sform code 2 with *different* matrices, intent and units set. Returns the stored int16 array."""
    import nibabel as nib

    stored = phantom("int16") + 1024  # stored >= 0, physical = 0.5 * stored - 1024
    g = oblique_geometry()
    qaff = ras_affine(g)
    saff = qaff.copy()
    saff[:3, 3] += (1.5, -2.0, 0.25)
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = klass(stored, saff)
    hdr = img.header
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(qaff, code=1)
    hdr.set_sform(saff, code=2)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_intent("t test", (12.0,), name="tstat")
    hdr["descrip"] = descrip
    hdr["aux_file"] = b"aux PHI"
    img = klass(stored, None, hdr)
    plain = str(path)[:-3] if str(path).endswith(".gz") else str(path)
    nib.save(img, plain)  # nibabel resets scl_slope/scl_inter on save: patch them into the file
    with open(plain, "rb") as f:
        raw = bytearray(f.read())
    n = 348 if version == 1 else 540
    fixed = type(hdr)(binaryblock=bytes(raw[:n]), check=False)
    fixed["scl_slope"], fixed["scl_inter"] = 0.5, -1024.0
    raw[:n] = fixed.binaryblock
    if plain != str(path):
        import gzip
        import os

        with gzip.open(str(path), "wb") as f:
            f.write(bytes(raw))
        os.remove(plain)
    else:
        with open(plain, "wb") as f:
            f.write(bytes(raw))
    return stored


def write_pydicom_series(folder, stored: np.ndarray, geometry: Geometry, *, slope=1.0, intercept=0.0,
                         modality="CT", patient_name="DOE^JOHN", per_slice_slope=False, shuffle_names=True):
    """A minimal CT/MR-like series written with pydicom (independent of inrv's writer): one file per
    slice, stored integers + RescaleSlope/Intercept, file names not in slice order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir()
    d = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    sp = np.asarray(geometry.spacing, dtype=np.float64)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    nz = stored.shape[2]
    order = np.random.default_rng(5).permutation(nz) if shuffle_names else np.arange(nz)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient_name, "PID-42", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(geometry.origin) + d[:, 2] * sp[2] * k]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [f"{sp[1]:.6f}", f"{sp[0]:.6f}"]
        ds.SliceThickness = f"{sp[2]:.6f}"
        s = slope * (1 + 0.5 * k) if per_slice_slope else slope
        ds.RescaleSlope, ds.RescaleIntercept = f"{s:g}", f"{intercept:g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.BitsAllocated = ds.BitsStored = stored.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()   # rows = y, columns = x
        ds.save_as(folder / f"IM{order[k]:04d}", enforce_file_format=True)
