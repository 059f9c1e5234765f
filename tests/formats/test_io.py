"""Volumes in and out: NIfTI / NRRD / MHA / DICOM round trips, header restore, DICOM tags, errors."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (SHAPE, make_volume, oblique_geometry, phantom, ras_affine, rotation, write_pydicom_series,
                      write_scaled_nifti)

from inrv.errors import InputError, UsageError
from inrv.formats.io import format_for_path, read_volume, restore_dtype, write_volume
from inrv.formats.dicom import PRIVATE_TAGS
from inrv.formats.volume import Geometry, Intensity, Volume

FORMATS = ["nii.gz", "nii", "nrrd", "mha", "dicom"]
DTYPES = ["int16", "uint8", "uint16", "float32"]


def _target(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / ("series" if fmt == "dicom" else f"vol.{fmt}")


def _assert_geometry(a: Geometry, b: Geometry, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(a.direction, b.direction, atol=tol)


def test_formats_package_is_torch_free():
    code = ("import sys, inrv.formats.io, inrv.formats.nifti, inrv.formats.dicom, inrv.formats.sitk_io; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_geometry_and_dtype(tmp_path, fmt, dtype):
    vol = make_volume(dtype)
    out = _target(tmp_path, fmt)
    write_volume(vol, out)
    back = read_volume(out)
    assert back.data.shape == SHAPE
    _assert_geometry(back.geometry, vol.geometry)
    if fmt == "dicom" and dtype == "float32":
        # DICOM pixels are integers: floats come back as int16 + rescale, within half a quantisation step
        assert back.data.dtype == np.int16
        phys = back.data * back.intensity.slope + back.intensity.intercept
        step = (vol.data.max() - vol.data.min()) / 65535
        assert np.max(np.abs(phys - vol.data)) <= step * 0.51 + 1e-6
        return
    assert back.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.intensity.min == vol.data.min() and back.intensity.max == vol.data.max()


def test_ct_negative_hu_through_dicom(tmp_path):
    vol = make_volume("int16", source={"kind": "dicom", "dicom": {"tags": {"0008|0060": "CT"}}})
    assert vol.data.min() < -1000
    write_volume(vol, tmp_path / "ct")
    back = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.intensity.units == "HU" and back.source["dicom"]["tags"]["0008|0060"] == "CT"


def test_single_slice_and_tiny_volumes(tmp_path):
    for fmt in FORMATS:
        vol = make_volume("int16", shape=(3, 1, 1) if fmt != "dicom" else (2, 3, 2))
        out = _target(tmp_path, fmt)
        write_volume(vol, out)
        back = read_volume(out)
        np.testing.assert_array_equal(back.data, vol.data)
        _assert_geometry(back.geometry, vol.geometry)


# ------------------------------------------------------------------------------------------ NIfTI
@pytest.mark.parametrize("version", [1, 2])
def test_nifti_scaled_header_restored_byte_for_byte(tmp_path, version):
    src = tmp_path / "src.nii.gz"
    stored = write_scaled_nifti(src, version=version)
    vol = read_volume(src, keep_private=True)
    assert vol.source["kind"] == f"nifti{version}"
    n = 348 if version == 1 else 540
    assert len(vol.source["nifti_header"]) == n
    assert vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data, stored)          # stored values, not scaled
    assert (vol.intensity.slope, vol.intensity.intercept) == (0.5, -1024.0)
    out = tmp_path / "out.nii.gz"
    write_volume(vol, out)
    a, b = gzip.decompress(src.read_bytes()), gzip.decompress(out.read_bytes())
    assert a[:n] == b[:n]                                     # qform/sform codes+matrices, units, intent
    assert a == b                                             # and the voxels
    img = nib.load(out)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 2)
    assert img.header.get_intent()[2] == "tstat"


def test_nifti_descrip_blanked_by_default(tmp_path):
    src = tmp_path / "src.nii"
    write_scaled_nifti(src)
    vol = read_volume(src)
    out = tmp_path / "out.nii"
    write_volume(vol, out)
    h_in, h_out = nib.load(src).header, nib.load(out).header
    assert h_out["descrip"].item() == b"" and h_out["aux_file"].item() == b""
    assert h_in["descrip"].item() == b"PATIENT NAME HERE"
    a, b = src.read_bytes(), out.read_bytes()
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    # only bytes inside descrip (148..227) and aux_file (228..251) differ
    assert diff and all(148 <= i < 252 for i in diff)
    assert b"PATIENT" not in b and b"aux PHI" not in b
    kept = read_volume(src, keep_private=True)
    assert b"PATIENT NAME HERE" in kept.source["nifti_header"]


def test_nifti_geometry_is_lps_and_matches_simpleitk(tmp_path):
    src = tmp_path / "ras.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), np.array(
        [[-0.7, 0, 0, 100], [0, -0.7, 0, 120], [0, 0, 2.5, -50], [0, 0, 0, 1]])), src)
    g = read_volume(src).geometry
    np.testing.assert_allclose(g.origin, (-100, -120, -50))
    np.testing.assert_allclose(g.direction, np.eye(3).ravel(), atol=1e-7)
    np.testing.assert_allclose(g.spacing, (0.7, 0.7, 2.5), rtol=1e-6)
    # an oblique file with qform == sform: same geometry as SimpleITK's reader
    obl = tmp_path / "obl.nii.gz"
    g0 = oblique_geometry()
    img = nib.Nifti1Image(phantom("int16"), ras_affine(g0))
    img.header.set_qform(ras_affine(g0), code=1)
    img.header.set_sform(ras_affine(g0), code=1)
    nib.save(img, obl)
    mine, theirs = read_volume(obl).geometry, sitk.ReadImage(str(obl))
    _assert_geometry(mine, Geometry(theirs.GetSpacing(), theirs.GetOrigin(), theirs.GetDirection()), 1e-5)
    _assert_geometry(mine, g0, 1e-5)
    # qform (code 1) != sform (code 2): the sform wins (nibabel's rule), documented in docs/formats.md
    both = tmp_path / "both.nii.gz"
    write_scaled_nifti(both)
    np.testing.assert_allclose(read_volume(both).geometry.origin,
                               np.asarray(g0.origin) + (-1.5, 2.0, 0.25), atol=1e-4)


def test_nifti_from_other_source_gets_both_forms(tmp_path):
    vol = make_volume("int16")
    vol.intensity.slope, vol.intensity.intercept = 2.0, -1024.0
    write_volume(vol, tmp_path / "x.nii.gz")
    img = nib.load(tmp_path / "x.nii.gz")
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(img.affine, ras_affine(vol.geometry), atol=1e-5)
    np.testing.assert_allclose(img.header.get_qform(), ras_affine(vol.geometry), atol=1e-5)
    assert (img.dataobj.slope, img.dataobj.inter) == (2.0, -1024.0)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj.get_unscaled()), vol.data)


def test_nifti_kept_header_follows_new_geometry(tmp_path):
    src = tmp_path / "src.nii.gz"
    write_scaled_nifti(src)
    vol = read_volume(src)
    g = vol.geometry
    half = Geometry(tuple(s * 2 for s in g.spacing), tuple(o + 1.0 for o in g.origin), g.direction)
    small = Volume(vol.data[::2, ::2, ::2].copy(), half, vol.intensity, vol.source)
    write_volume(small, tmp_path / "small.nii.gz")
    back = read_volume(tmp_path / "small.nii.gz")
    assert back.data.shape == small.data.shape
    _assert_geometry(back.geometry, half)
    assert (back.intensity.slope, back.intensity.intercept) == (0.5, -1024.0)
    hdr = nib.load(tmp_path / "small.nii.gz").header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 2)   # codes kept


def test_nifti_sform_only_header_keeps_qform_code_zero(tmp_path):
    src = tmp_path / "s.nii"
    g0 = oblique_geometry()
    img = nib.Nifti1Image(phantom("uint8"), ras_affine(g0))
    img.header.set_qform(None, code=0)
    img.header.set_sform(ras_affine(g0), code=4)       # MNI
    nib.save(img, src)
    vol = read_volume(src)
    _assert_geometry(vol.geometry, g0)
    moved = Geometry(g0.spacing, (0.0, 1.0, 2.0), g0.direction)
    write_volume(Volume(vol.data, moved, vol.intensity, vol.source), tmp_path / "o.nii")
    hdr = nib.load(tmp_path / "o.nii").header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 4)
    _assert_geometry(read_volume(tmp_path / "o.nii").geometry, moved)
    np.testing.assert_allclose(hdr["pixdim"][1:4], g0.spacing, rtol=1e-6)


def test_nifti_singleton_4th_axis_is_3d(tmp_path):
    p = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(phantom("uint8")[..., None], np.eye(4)), p)
    vol = read_volume(p)
    assert vol.data.shape == SHAPE
    write_volume(vol, tmp_path / "o.nii.gz")
    assert nib.load(tmp_path / "o.nii.gz").shape == SHAPE + (1,)   # the header's own shape is kept


# ------------------------------------------------------------------------------------------ cross-format
def test_scaled_nifti_to_nrrd_writes_physical_values(tmp_path):
    src = tmp_path / "src.nii.gz"
    stored = write_scaled_nifti(src)
    vol = read_volume(src)
    write_volume(vol, tmp_path / "x.nrrd")
    back = read_volume(tmp_path / "x.nrrd")
    np.testing.assert_allclose(back.data, stored * 0.5 - 1024.0)
    _assert_geometry(back.geometry, vol.geometry, 1e-6)


def test_scaled_nifti_to_dicom_keeps_stored_and_rescale(tmp_path):
    src = tmp_path / "src.nii.gz"
    stored = write_scaled_nifti(src)
    vol = read_volume(src)
    write_volume(vol, tmp_path / "dcm")
    back = read_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(back.data, stored)
    assert (back.intensity.slope, back.intensity.intercept) == (0.5, -1024.0)
    _assert_geometry(back.geometry, vol.geometry, 1e-6)


def test_left_handed_volume_to_dicom_is_the_same_image_in_space(tmp_path):
    vol = make_volume("int16", left_handed=True)
    write_volume(vol, tmp_path / "lh")
    back = read_volume(tmp_path / "lh")
    # DICOM stores a right-handed frame: z is reversed, every voxel sits at the same physical point
    np.testing.assert_array_equal(back.data, vol.data[:, :, ::-1])
    d0 = np.asarray(vol.geometry.direction).reshape(3, 3) * vol.geometry.spacing
    d1 = np.asarray(back.geometry.direction).reshape(3, 3) * back.geometry.spacing
    for idx in [(0, 0, 0), (12, 10, 6), (3, 4, 5)]:
        p0 = np.asarray(vol.geometry.origin) + d0 @ idx
        j = (idx[0], idx[1], SHAPE[2] - 1 - idx[2])
        p1 = np.asarray(back.geometry.origin) + d1 @ j
        np.testing.assert_allclose(p0, p1, atol=1e-5)


# ------------------------------------------------------------------------------------------ DICOM tags
def _dicom_series(folder: Path):
    pydicom = pytest.importorskip("pydicom")
    return [pydicom.dcmread(f) for f in sorted(folder.iterdir())]


def test_dicom_output_tags(tmp_path):
    src = {"kind": "dicom", "lossy": {"lossy_ratio": 37.5},
           "dicom": {"tags": {"0008|0060": "CT", "0010|0010": "DOE^JANE", "0020|000d": "1.2.3.4"}}}
    vol = make_volume("int16", source=src)
    write_volume(vol, tmp_path / "s")
    slices = _dicom_series(tmp_path / "s")
    assert len(slices) == SHAPE[2]
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(getattr(s, attr)) for s in slices}) == 1, attr
    assert len({str(s.SOPInstanceUID) for s in slices}) == len(slices)
    assert str(slices[0].StudyInstanceUID) == "1.2.3.4"            # kept tags are used
    assert str(slices[0].PatientName) == "DOE^JANE"
    d = np.asarray(vol.geometry.direction).reshape(3, 3)
    for k, s in enumerate(sorted(slices, key=lambda s: int(s.InstanceNumber))):
        assert s.LossyImageCompression == "01"
        assert "LossyImageCompressionMethod" not in s            # no Defined Term fits a neural codec
        assert float(s.LossyImageCompressionRatio) == 37.5
        assert list(s.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert s.Modality == "CT"
        assert str(s.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        assert (float(s.RescaleSlope), float(s.RescaleIntercept)) == (1.0, 0.0)
        ipp = np.asarray(vol.geometry.origin) + d[:, 2] * vol.geometry.spacing[2] * k
        np.testing.assert_allclose([float(v) for v in s.ImagePositionPatient], ipp, atol=1e-6)
        np.testing.assert_allclose([float(v) for v in s.ImageOrientationPatient], [*d[:, 0], *d[:, 1]], atol=1e-9)
        np.testing.assert_allclose([float(v) for v in s.PixelSpacing], [0.9, 0.7])  # row, column spacing
        assert float(s.SliceThickness) == 2.5
        np.testing.assert_array_equal(s.pixel_array, vol.data[:, :, k].T)


@pytest.mark.parametrize("units, modality, sop_class", [
    ("HU", "CT", "1.2.840.10008.5.1.4.1.1.2"),   # CT Image Storage
    (None, "MR", "1.2.840.10008.5.1.4.1.1.4"),   # MR Image Storage
])
def test_dicom_from_a_non_dicom_source_has_a_modality_with_geometry(tmp_path, units, modality, sop_class):
    vol = make_volume("int16")                  # source kind "array": no modality to copy
    vol.intensity.units = units
    write_volume(vol, tmp_path / "s")
    s = _dicom_series(tmp_path / "s")[0]
    assert s.Modality == modality and str(s.SOPClassUID) == sop_class
    np.testing.assert_allclose([float(v) for v in s.PixelSpacing], [0.9, 0.7])


def test_dicom_privacy_default_and_keep_private(tmp_path):
    src = {"kind": "dicom", "dicom": {"tags": {"0008|0060": "MR", "0010|0010": "DOE^JANE", "0010|0020": "ID123",
                                               "0020|000d": "1.2.3.4", "0020|0052": "1.2.3.5"}}}
    write_volume(make_volume("uint16", source=src), tmp_path / "orig")
    plain = read_volume(tmp_path / "orig")
    assert not set(plain.source["dicom"]["tags"]) & set(PRIVATE_TAGS)
    assert plain.source["dicom"]["tags"]["0008|0060"] == "MR"
    write_volume(plain, tmp_path / "anon")
    s = _dicom_series(tmp_path / "anon")[0]
    assert str(s.get("PatientName", "")) == "" and str(s.get("PatientID", "")) == ""
    assert str(s.StudyInstanceUID) != "1.2.3.4" and str(s.FrameOfReferenceUID) != "1.2.3.5"
    assert s.Modality == "MR" and s.LossyImageCompression == "01" and "LossyImageCompressionRatio" not in s
    kept = read_volume(tmp_path / "orig", keep_private=True)
    assert kept.source["dicom"]["tags"]["0010|0010"] == "DOE^JANE"
    write_volume(kept, tmp_path / "kept")
    s = _dicom_series(tmp_path / "kept")[0]
    assert str(s.PatientName) == "DOE^JANE" and str(s.StudyInstanceUID) == "1.2.3.4"
    assert str(s.FrameOfReferenceUID) == "1.2.3.5"
    orig_series = str(_dicom_series(tmp_path / "orig")[0].SeriesInstanceUID)
    assert str(s.SeriesInstanceUID) != orig_series                       # always a new series


def test_dicom_refuses_volumes_thinner_than_two_voxels(tmp_path):
    for shape in [(5, 4, 1), (4, 1, 3)]:
        with pytest.raises(InputError, match="at least 2"):
            write_volume(make_volume("int16", shape=shape), tmp_path / "thin")
        assert not (tmp_path / "thin").exists()
    assert not any(tmp_path.iterdir())                                   # no temporary folder left


def test_dicom_reads_one_file_of_a_series(tmp_path):
    vol = make_volume("int16")
    write_volume(vol, tmp_path / "s")
    one = sorted((tmp_path / "s").iterdir())[3]
    np.testing.assert_array_equal(read_volume(one).data, vol.data)


# ------------------------------------------------------------------------------------------ bad inputs
def test_4d_and_2d_inputs_rejected(tmp_path):
    p4 = tmp_path / "f.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), p4)
    with pytest.raises(InputError, match="4D volumes are not supported yet"):
        read_volume(p4)
    p2 = tmp_path / "f2.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.int16), np.eye(4)), p2)
    with pytest.raises(InputError, match="2D"):
        read_volume(p2)
    n4 = tmp_path / "f.nrrd"
    sitk.WriteImage(sitk.Image([6, 5, 4, 3], sitk.sitkInt16), str(n4))
    with pytest.raises(InputError, match="4D volumes are not supported yet"):
        read_volume(n4)
    m2 = tmp_path / "f.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(m2))
    with pytest.raises(InputError, match="2D"):
        read_volume(m2)


@pytest.mark.parametrize("dtype", [np.complex64, np.int64, np.uint64])
def test_unsupported_nifti_dtypes(tmp_path, dtype):
    p = tmp_path / "x.nii"
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.ones((3, 4, 5), dtype=dtype), np.eye(4), hdr)
    nib.save(img, p)
    with pytest.raises(InputError, match="not supported"):
        read_volume(p)


def test_rgb_and_vector_inputs_rejected(tmp_path):
    rgb = tmp_path / "rgb.nii"
    arr = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(arr, np.eye(4)), rgb)
    with pytest.raises(InputError, match="not supported"):
        read_volume(rgb)
    vec = tmp_path / "vec.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True), str(vec))
    with pytest.raises(InputError, match="components"):
        read_volume(vec)


def test_writing_unsupported_dtype_or_shape_is_input_error(tmp_path):
    with pytest.raises(InputError):
        write_volume(Volume(np.zeros((3, 4, 5), bool)), tmp_path / "b.nii.gz")
    with pytest.raises(InputError):
        write_volume(Volume(np.zeros((3, 4), np.int16)), tmp_path / "b2.nii.gz")
    assert not any(tmp_path.iterdir())                    # nothing half-written


def test_bad_inputs_give_one_line_input_errors(tmp_path):
    vol = make_volume("int16")
    write_volume(vol, tmp_path / "good.nii.gz")
    good = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(good[: len(good) // 2])
    for ext in ("nrrd", "mha"):
        write_volume(vol, tmp_path / f"good.{ext}")
        whole = (tmp_path / f"good.{ext}").read_bytes()
        (tmp_path / f"trunc.{ext}").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.nii").write_text("hello, I am not an image\n" * 20)
    rng = np.random.default_rng(1)
    for name in ("random.nii.gz", "random.nrrd", "random.mha", "random.nii", "random_no_suffix", "random.xyz"):
        (tmp_path / name).write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "text_dir").mkdir()
    (tmp_path / "text_dir" / "a.dcm").write_text("not dicom")
    bad = ["missing.nii.gz", "trunc.nii.gz", "trunc.nrrd", "trunc.mha", "text.nii", "random.nii.gz",
           "random.nrrd", "random.mha",
           "random.nii", "random_no_suffix", "random.xyz", "empty_dir", "text_dir", "text_dir/a.dcm"]
    for name in bad:
        with pytest.raises(InputError) as info:
            read_volume(tmp_path / name)
        msg = str(info.value)
        assert "\n" not in msg and len(msg) < 400, (name, msg)


def test_folder_with_two_series_is_rejected(tmp_path):
    write_volume(make_volume("int16"), tmp_path / "a")
    write_volume(make_volume("int16"), tmp_path / "b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("a", "b"):
        for f in (tmp_path / sub).iterdir():
            os.link(f, mixed / f"{sub}_{f.name}")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_volume(mixed)


# ------------------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_output_needs_force(tmp_path, fmt):
    out = _target(tmp_path, fmt)
    write_volume(make_volume("uint8"), out)
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir()) if out.is_dir() else out.read_bytes()
    with pytest.raises(UsageError, match="exists"):
        write_volume(make_volume("int16"), out)
    after = sorted((p.name, p.read_bytes()) for p in out.iterdir()) if out.is_dir() else out.read_bytes()
    assert before == after
    write_volume(make_volume("int16"), out, force=True)
    assert read_volume(out).data.dtype == np.int16
    assert [p.name for p in tmp_path.iterdir()] == [out.name]      # no temporary leftovers


def test_detached_headers_are_read(tmp_path):
    vol = make_volume("int16")
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.data.transpose(2, 1, 0)))
    img.SetSpacing(vol.geometry.spacing)
    img.SetOrigin(vol.geometry.origin)
    img.SetDirection(vol.geometry.direction)
    for name in ("v.mhd", "v.nhdr"):
        sitk.WriteImage(img, str(tmp_path / name))
        back = read_volume(tmp_path / name)
        np.testing.assert_array_equal(back.data, vol.data)
        _assert_geometry(back.geometry, vol.geometry, 1e-9)


def test_format_for_path(tmp_path):
    assert format_for_path("a.nii") == format_for_path("A.NII.GZ") == "nifti"
    assert format_for_path("a.nrrd") == format_for_path("a.nhdr") == "nrrd"
    assert format_for_path("a.mha") == format_for_path("a.mhd") == "mha"
    assert format_for_path(tmp_path) == format_for_path(tmp_path / "new_series") == "dicom"
    with pytest.raises(UsageError):
        format_for_path("a.png")
    with pytest.raises(UsageError):
        write_volume(make_volume("uint8"), tmp_path / "x.mhd")      # detached header: read-only


# ------------------------------------------------------------------------------------------ restore_dtype
def test_restore_dtype_rounds_and_clips():
    it = Intensity(dtype="int16", min=-1024, max=3071)
    out = restore_dtype(np.array([-2000.0, -1023.6, 0.49, 0.5, 1.5, 3070.6, 1e9, np.nan], np.float32), it)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [-1024, -1024, 0, 0, 2, 3071, 3071, 0])
    u8 = restore_dtype(np.array([-5.0, 12.4, 300.0]), Intensity(dtype="uint8", min=0, max=255))
    assert u8.dtype == np.uint8 and list(u8) == [0, 12, 255]
    # a range outside the dtype's (corrupt header) still clips to the dtype
    u16 = restore_dtype(np.array([-1.0, 70000.0]), Intensity(dtype="uint16", min=-10, max=1e6))
    assert list(u16) == [0, 65535]
    f = restore_dtype(np.array([-1.0, 0.25, 9.0], np.float64), Intensity(dtype="float32", min=0, max=5))
    assert f.dtype == np.float32 and list(f) == [0.0, 0.25, 5.0]
    i32 = restore_dtype(np.array([16777217.0 + 0.4]), Intensity(dtype="int32", min=0, max=2 ** 31 - 1))
    assert int(i32[0]) == 16777217                                       # no float32 detour
    with pytest.raises(InputError):
        restore_dtype(np.zeros(3), Intensity(dtype="complex64"))


def test_restore_dtype_matches_phantom_after_noise():
    data = phantom("int16")
    it = Intensity(dtype="int16", min=float(data.min()), max=float(data.max()))
    noisy = data.astype(np.float32) + np.random.default_rng(0).uniform(-0.49, 0.49, data.shape).astype(np.float32)
    np.testing.assert_array_equal(restore_dtype(noisy, it), data)
    assert oblique_geometry().spacing == (0.7, 0.9, 2.5)


# ------------------------------------------------------------------------------------------ more dtypes and headers
@pytest.mark.parametrize("dtype", ["int8", "int32", "uint32", "float64"])
def test_other_dtypes_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(3)
    if dtype == "float64":
        data = rng.standard_normal(SHAPE) * 1e5
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, SHAPE, endpoint=True).astype(dtype)
    vol = Volume(data, oblique_geometry())
    for fmt in FORMATS:
        out = tmp_path / (f"s_{fmt}" if fmt == "dicom" else f"v.{fmt}")
        write_volume(vol, out)
        back = read_volume(out)
        _assert_geometry(back.geometry, vol.geometry)
        if fmt == "dicom" and dtype in ("float64", "int32", "uint32"):
            # CT/MR pixels are 16-bit: wider values are quantised with a rescale spanning their range
            assert back.data.dtype == np.int16
            step = (float(data.max()) - float(data.min())) / 65535
            phys = back.data * back.intensity.slope + back.intensity.intercept
            np.testing.assert_allclose(phys, data.astype(np.float64), atol=0.51 * step)
            continue
        assert back.data.dtype == data.dtype, fmt
        np.testing.assert_array_equal(back.data, data)


def test_big_endian_nifti_stays_big_endian(tmp_path):
    src = tmp_path / "be.nii"
    data = phantom("int16")
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(data, ras_affine(oblique_geometry()), hdr), src)
    assert int.from_bytes(src.read_bytes()[:4], "big") == 348
    vol = read_volume(src)
    assert vol.data.dtype == np.dtype("int16") and vol.data.dtype.isnative
    np.testing.assert_array_equal(vol.data, data)
    write_volume(vol, tmp_path / "out.nii")
    assert (tmp_path / "out.nii").read_bytes() == src.read_bytes()


def test_sheared_sform_restored_exactly(tmp_path):
    aff = ras_affine(oblique_geometry())
    aff[0, 1] += 0.3                                   # shear: not expressible as spacing + direction
    src = tmp_path / "shear.nii.gz"
    img = nib.Nifti1Image(phantom("uint8"), aff)
    img.header.set_sform(aff, code=2)
    nib.save(img, src)
    vol = read_volume(src)
    d = np.asarray(vol.geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)   # geometry for other writers: orthonormal
    write_volume(vol, tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(nib.load(tmp_path / "out.nii.gz").get_sform(), img.header.get_sform())
    write_volume(vol, tmp_path / "out.nrrd")                      # still writable elsewhere
    assert read_volume(tmp_path / "out.nrrd").data.shape == SHAPE


def test_dicom_missing_slice_is_rejected(tmp_path):
    write_volume(make_volume("int16"), tmp_path / "s")
    files = sorted((tmp_path / "s").iterdir())
    files[3].unlink()
    with pytest.raises(InputError, match="not evenly spaced"):
        read_volume(tmp_path / "s")


def test_force_never_replaces_a_folder_of_other_things(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(UsageError, match="refusing"):
        write_volume(make_volume("int16"), precious, force=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


# ------------------------------------------------------------------------------------------ DICOM from elsewhere
def test_reads_a_pydicom_ct_series_as_stored_values(tmp_path):
    pytest.importorskip("pydicom")
    stored = (phantom("int16") + 1024).clip(0, 4095).astype(np.uint16)   # CT: uint16 + intercept -1024
    g = oblique_geometry()
    write_pydicom_series(tmp_path / "ct", stored, g, slope=1.0, intercept=-1024.0)
    vol = read_volume(tmp_path / "ct")                                  # names shuffled on disk
    assert vol.data.dtype == np.uint16
    np.testing.assert_array_equal(vol.data, stored)
    assert (vol.intensity.slope, vol.intensity.intercept, vol.intensity.units) == (1.0, -1024.0, "HU")
    _assert_geometry(vol.geometry, g, 1e-5)
    assert vol.source["dicom"]["tags"]["0008|0060"] == "CT"
    assert not set(vol.source["dicom"]["tags"]) & set(PRIVATE_TAGS)     # no PatientName by default
    kept = read_volume(tmp_path / "ct", keep_private=True)
    assert kept.source["dicom"]["tags"]["0010|0010"] == "DOE^JOHN"
    # the physical values survive into NIfTI as scl_slope/scl_inter
    write_volume(vol, tmp_path / "ct.nii.gz")
    img = nib.load(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(img.get_fdata(), stored.astype(np.float64) - 1024)
    assert img.get_data_dtype() == np.uint16


def test_per_slice_rescale_keeps_rescaled_values(tmp_path):
    pytest.importorskip("pydicom")
    stored = phantom("uint16") // 4
    g = oblique_geometry()
    write_pydicom_series(tmp_path / "mr", stored, g, slope=0.25, modality="MR", per_slice_slope=True)
    vol = read_volume(tmp_path / "mr")
    slopes = 0.25 * (1 + 0.5 * np.arange(SHAPE[2]))
    assert (vol.intensity.slope, vol.intensity.intercept) == (1.0, 0.0) and vol.intensity.units is None
    np.testing.assert_allclose(vol.data, stored * slopes[None, None, :], rtol=1e-6)


# ------------------------------------------------------------------------------------------ random geometries
def test_random_oblique_geometries_round_trip(tmp_path_factory):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
    @hypothesis.given(angles=st.tuples(*[st.floats(-3.1, 3.1)] * 3),
                      spacing=st.tuples(*[st.floats(0.2, 6.0)] * 3),
                      origin=st.tuples(*[st.floats(-400.0, 400.0)] * 3),
                      shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)),
                      left=st.booleans())
    def check(angles, spacing, origin, shape, left):
        d = rotation(*angles)
        if left:
            d[:, 2] *= -1
        g = Geometry(spacing, origin, tuple(d.ravel()))
        data = np.random.default_rng(0).integers(-1000, 3000, shape).astype(np.int16)
        vol = Volume(data, g)
        folder = tmp_path_factory.mktemp("geo")
        for fmt in ("nii.gz", "nrrd", "mha"):
            write_volume(vol, folder / f"v.{fmt}")
            back = read_volume(folder / f"v.{fmt}")
            np.testing.assert_array_equal(back.data, data)
            tol = 1e-5 if fmt == "nii.gz" else 1e-9            # NIfTI stores float32
            np.testing.assert_allclose(back.geometry.spacing, spacing, rtol=tol)
            np.testing.assert_allclose(back.geometry.origin, origin, rtol=tol, atol=tol * 400)
            np.testing.assert_allclose(back.geometry.direction, g.direction, atol=tol * 10)
        if min(shape) < 2:
            with pytest.raises(InputError, match="at least 2"):
                write_volume(vol, folder / "dcm")
            return
        write_volume(vol, folder / "dcm")
        back = read_volume(folder / "dcm")
        if left:  # DICOM is right-handed: same points in space with z reversed
            data, d = data[:, :, ::-1], d * [1, 1, -1]
            origin = np.asarray(origin) - d[:, 2] * spacing[2] * (shape[2] - 1)
        np.testing.assert_array_equal(back.data, data)
        np.testing.assert_allclose(back.geometry.spacing, spacing, rtol=1e-6)
        np.testing.assert_allclose(back.geometry.origin, origin, atol=1e-5)
        np.testing.assert_allclose(back.geometry.direction, d.ravel(), atol=1e-6)

    check()
