"""The public API (``inrv/__init__.py``): each function's promise, on a tiny oblique phantom.

The models and formats have their own tests; here: what a user of ``import inrv`` relies on. One encode
is shared by the module (latent-tiny, a few steps: seconds on a CPU).
"""

import json
import math

import numpy as np
import pytest
from conftest import make_volume

import inrv

STEPS = dict(steps=8, polish_steps=2)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """``(source volume, its .nii.gz, its .inrv, the Summary compress returned)``."""
    d = tmp_path_factory.mktemp("api")
    vol = make_volume("int16", shape=(14, 12, 8))          # oblique, anisotropic grid
    src, dst = d / "ct.nii.gz", d / "ct.inrv"
    inrv.save(vol, src)
    summary = inrv.compress(src, dst, "latent-tiny", device="cpu", **STEPS)
    return inrv.load(src), src, dst, summary


def test_load_and_save_round_trip_values_and_geometry(tmp_path):
    vol = make_volume("uint16")
    inrv.save(vol, tmp_path / "v.nrrd")
    back = inrv.load(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.geometry.origin, vol.geometry.origin, atol=1e-5)
    np.testing.assert_allclose(back.geometry.direction, vol.geometry.direction, atol=1e-6)
    with pytest.raises(inrv.UsageError):
        inrv.save(vol, tmp_path / "v.nrrd")              # exists: needs force
    inrv.save(vol, tmp_path / "v.nrrd", force=True)


@pytest.mark.parametrize("preset, overrides", [("tiny", {"steps": 3, "lr_prefit_steps": 2}),
                                               ("latent-tiny", {"steps": 5})])
def test_the_reconstruction_kept_by_fit_is_what_decode_returns(preset, overrides):
    """inrv.compress measures quality on the fit's own reconstruction instead of decoding again: that is
    only right if it equals a decode of the same Encoded."""
    x = np.random.default_rng(0).integers(0, 200, (12, 10, 8)).astype(np.uint8)
    enc = inrv.encode(x, preset, device="cpu", **overrides)
    assert enc.reconstruction is not None
    np.testing.assert_array_equal(enc.reconstruction, inrv.decode(enc, device="cpu"))


def test_encode_refuses_what_is_not_a_volume():
    with pytest.raises(inrv.InputError, match="3D"):
        inrv.encode(np.zeros((4, 4)), "latent-tiny")
    with pytest.raises(inrv.UsageError):
        inrv.encode(np.zeros((4, 4, 4)), "no-such-preset")


def test_compress_returns_the_summary_of_the_file_it_wrote(encoded):
    vol, _, dst, summary = encoded
    assert isinstance(summary, inrv.Summary)
    assert summary.file_bytes == dst.stat().st_size
    assert summary.bpv == pytest.approx(8 * dst.stat().st_size / vol.data.size)
    assert summary.shape == vol.shape and summary.dtype == "int16" and summary.model == "latent"
    assert summary.seconds > 0 and summary.device == "cpu"
    assert 0 < summary.ssim <= 1 and summary.max_abs_err >= 0
    # the file holds no reconstruction, and the PSNR it reports is the one of a real decode
    assert inrv.read(dst).encoded.reconstruction is None
    restored = inrv.restore(dst, device="cpu")
    assert summary.psnr == pytest.approx(inrv.codec.metrics.psnr(vol.data, restored.data))


def test_info_is_the_summary_without_seconds_and_to_dict_is_strict_json(encoded):
    _, _, dst, summary = encoded
    s = inrv.info(dst)
    assert s == inrv.Summary(**{**s.__dict__, "seconds": None})
    assert (s.file_bytes, s.bpv, s.psnr, s.ssim) == (summary.file_bytes, summary.bpv, summary.psnr, summary.ssim)
    assert s.seconds is None and "seconds" not in s.to_dict() and summary.to_dict()["seconds"] == summary.seconds
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert d["schema"] == "inrv-info/1" and d["bpv"] == s.bpv and d["metrics"]["psnr"] == s.psnr
    assert d["shape"] == list(s.shape) and d["file_bytes"] == s.file_bytes
    with pytest.raises(inrv.FormatError):
        inrv.info(encoded[1])                              # the NIfTI source is not an .inrv file


def test_an_exact_psnr_is_inf_in_the_summary_and_a_string_in_json():
    info = {"model": "latent", "shape": [2, 2, 2], "dtype": "uint8", "file_bytes": 10, "raw_bytes": 8,
            "ratio": 0.8, "bpv": 10.0, "metrics": {"psnr": "inf", "device": "cpu"}}
    s = inrv.Summary.from_info(info)
    assert math.isinf(s.psnr) and s.ssim is None and s.device == "cpu"
    assert s.to_dict()["metrics"]["psnr"] == "inf"


def test_restore_gives_the_original_dtype_and_geometry(encoded):
    vol, _, dst, _ = encoded
    f = inrv.read(dst)
    out = inrv.restore(dst, device="cpu")
    assert out.data.dtype == vol.data.dtype and out.shape == vol.shape
    assert out.geometry == f.geometry
    np.testing.assert_allclose(out.geometry.origin, vol.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(out.geometry.direction, vol.geometry.direction, atol=1e-6)
    assert out.intensity == f.intensity
    assert out.source["lossy"]["lossy_ratio"] == pytest.approx(vol.data.nbytes / f.file_bytes)
    # the same voxels as decoding the Encoded and restoring the dtype by hand
    by_hand = inrv.formats.io.restore_dtype(inrv.decode(f.encoded, device="cpu"), f.intensity)
    np.testing.assert_array_equal(out.data, by_hand)


def test_restore_on_another_grid_keeps_the_field_of_view_of_an_oblique_volume(tmp_path):
    """``--shape`` (the paper model renders any grid): the corner of the field of view stays where it is
    in world coordinates (not the origin: that is the first voxel's centre, which moves along the
    oblique axes)."""
    vol = make_volume("int16", shape=(14, 12, 8))
    inrv.save(vol, tmp_path / "ct.nii.gz")
    dst = tmp_path / "ct.inrv"
    inrv.compress(tmp_path / "ct.nii.gz", dst, "tiny", device="cpu", steps=2, lr_prefit_steps=1)
    vol = inrv.load(tmp_path / "ct.nii.gz")
    new = (28, 6, 8)
    out = inrv.restore(dst, shape=new, device="cpu")
    assert out.shape == new and out.data.dtype == np.int16
    d = np.asarray(vol.geometry.direction).reshape(3, 3)
    old_sp, new_sp = np.asarray(vol.geometry.spacing), np.asarray(out.geometry.spacing)
    np.testing.assert_allclose(new_sp * new, old_sp * np.asarray(vol.shape))        # same extent
    corner_old = np.asarray(vol.geometry.origin) - d @ (old_sp / 2)
    corner_new = np.asarray(out.geometry.origin) - d @ (new_sp / 2)
    np.testing.assert_allclose(corner_new, corner_old, atol=1e-6)
    assert not np.allclose(out.geometry.origin, vol.geometry.origin, atol=0.1)   # the origin did move
    np.testing.assert_allclose(out.geometry.direction, vol.geometry.direction)
    with pytest.raises(inrv.UsageError, match="3 positive"):
        inrv.restore(dst, shape=(0, 4, 4))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ""], ids=["nrrd", "mha", "dicom"])
def test_decompress_writes_what_restore_returns(encoded, tmp_path, suffix):
    """End to end: .inrv -> NRRD, MHA or a DICOM folder, read back: the voxels of restore(), exactly,
    in the original dtype, on the original grid."""
    vol, _, dst, _ = encoded
    out = tmp_path / f"out{suffix}"
    written = inrv.decompress(dst, out)
    back = inrv.load(out)
    expected = inrv.restore(dst, device="cpu")
    assert back.data.dtype == np.int16 and back.shape == vol.shape
    np.testing.assert_array_equal(back.data, expected.data)
    np.testing.assert_array_equal(written.data, expected.data)
    np.testing.assert_allclose(back.geometry.spacing, vol.geometry.spacing, atol=1e-4)
    np.testing.assert_allclose(back.geometry.origin, vol.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(back.geometry.direction, vol.geometry.direction, atol=1e-4)
    with pytest.raises(inrv.UsageError):
        inrv.decompress(dst, out)                          # exists: needs force


@pytest.mark.slow
def test_bpv_search_hits_the_target_in_the_real_file_size(tmp_path):
    """``--bpv`` is a promise about the file a user gets: measured on the file, container included
    (the header is ~20-30 % of a file this small, which a search on the model's own bytes misses)."""
    from conftest import ellipsoid_phantom

    vol = inrv.Volume(data=ellipsoid_phantom((20, 18, 16)), geometry=make_volume().geometry,
                      intensity=inrv.Intensity(dtype="uint8", min=0.0, max=255.0))
    inrv.save(vol, tmp_path / "x.nii.gz")
    target = 1.5
    s = inrv.compress(tmp_path / "x.nii.gz", tmp_path / "x.inrv", "latent-tiny", device="cpu", steps=15,
                      polish_steps=2, target_bpv=target, best_coder=False)     # the neural search itself
    real = 8 * (tmp_path / "x.inrv").stat().st_size / vol.data.size
    assert s.bpv == pytest.approx(real)
    assert abs(real - target) / target < 0.05, f"{real:.3f} bpv in the file for a {target} bpv target"
    assert inrv.info(tmp_path / "x.inrv").details["config"]["target_bpv"] == target
