"""The public API's own promises (the models and formats have their own tests)."""

import numpy as np
import pytest

import inrv


@pytest.mark.parametrize("preset, overrides", [("tiny", {"steps": 3, "lr_prefit_steps": 2}),
                                               ("latent-tiny", {"steps": 5})])
def test_the_reconstruction_kept_by_fit_is_what_decode_returns(preset, overrides):
    """inrv.compress measures quality on the fit's own reconstruction instead of decoding again: that is
    only right if it equals a decode of the same Encoded."""
    x = np.random.default_rng(0).integers(0, 200, (12, 10, 8)).astype(np.uint8)
    enc = inrv.encode(x, preset, device="cpu", **overrides)
    assert enc.reconstruction is not None
    np.testing.assert_array_equal(enc.reconstruction, inrv.decode(enc, device="cpu"))


def test_compress_writes_no_reconstruction_and_reports_quality(tmp_path):
    import nibabel as nib

    x = np.random.default_rng(1).integers(0, 200, (12, 10, 8)).astype(np.uint8)
    nib.save(nib.Nifti1Image(x, np.eye(4)), tmp_path / "x.nii.gz")
    summary = inrv.compress(tmp_path / "x.nii.gz", tmp_path / "x.inrv", "latent-tiny", device="cpu", steps=5)
    f = inrv.read(tmp_path / "x.inrv")
    assert f.encoded.reconstruction is None
    decoded = inrv.restore(tmp_path / "x.inrv", device="cpu").data
    assert summary.psnr == pytest.approx(inrv.codec.metrics.psnr(x, decoded))
