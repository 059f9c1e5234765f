"""A --bpv/--psnr target met by the better of the neural model and the near-lossless coder
(``codec/nearlossless/target.py``, ``inrv.compress``): the bound search, the choice, the skipped fit."""

from __future__ import annotations

import numpy as np
import pytest

import inrv
from inrv.codec.nearlossless import NearLosslessConfig, NearLosslessModel
from inrv.codec.nearlossless.target import encode_to_target
from inrv.formats.volume import Geometry, Intensity, Volume


def _phantom(shape=(24, 22, 20), seed=3, dtype=np.int16, noise=6.0) -> np.ndarray:
    """Smooth tissue with edges and noise: a rate that falls steadily with the bound."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    v = 400.0 * np.exp(-(x ** 2 + y ** 2 + z ** 2) * 2) + 300.0 * ((x ** 2 + (y / 0.7) ** 2) < 0.3)
    return np.rint(v + rng.normal(0, noise, shape)).astype(dtype)


def _rate(x, E) -> float:
    enc = NearLosslessModel().fit(x, NearLosslessConfig(max_error=E))
    return 8.0 * sum(len(b) for b in enc.sections.values()) / x.size


@pytest.mark.parametrize("target", [1.5, 4.5])
def test_bpv_target_gets_the_smallest_bound_that_fits(target):
    x = _phantom()
    best, trials = encode_to_target(x, bpv=target)
    assert best is not None and best.bpv <= target
    assert len(trials) <= 6
    assert best.max_error == int(best.max_error) >= 1
    assert np.max(np.abs(inrv.decode(best.enc) - x)) <= best.max_error
    if best.max_error > 1:     # one bound less does not fit: the search did not stop early
        assert _rate(x, best.max_error - 1) > target


@pytest.mark.parametrize("target", [36.0, 44.0])
def test_psnr_target_gets_a_large_bound_that_meets_it(target):
    x = _phantom()
    best, trials = encode_to_target(x, psnr=target)
    assert best is not None and best.psnr >= target
    # the search bracketed the target: a larger bound was tried and missed it
    assert any(t.max_error > best.max_error and t.psnr < target for t in trials)


def test_float_voxels_and_unreachable_targets():
    x = _phantom(dtype=np.float32).astype(np.float32) / 7.0
    best, _ = encode_to_target(x, bpv=1.0)
    assert best is not None and best.bpv <= 1.0 and best.max_error > 0
    assert np.max(np.abs(inrv.decode(best.enc).astype(np.float32) - x)) <= best.max_error
    # a rate no bound reaches, and a PSNR only lossless reaches: no file
    assert encode_to_target(_phantom(), bpv=1e-4)[0] is None
    assert encode_to_target(_phantom(), psnr=300.0)[0] is None
    assert encode_to_target(np.full((5, 6, 7), 3, np.uint8), bpv=1.0) == (None, [])
    with pytest.raises(ValueError):
        encode_to_target(x, bpv=1.0, psnr=30.0)


def test_hopeless_and_deadline_stop_the_search_early():
    x = _phantom()
    full = encode_to_target(x, bpv=1.5)[1]
    seen = []
    short = encode_to_target(x, bpv=1.5, hopeless=lambda t: seen.append(t) or True)[1]
    assert seen and len(short) < len(full)
    # a deadline (a time, or a function of the latest trial) stops it after the encode under way
    assert len(encode_to_target(x, bpv=1.5, deadline=0.0)[1]) == 1
    calls = []
    assert len(encode_to_target(x, bpv=1.5, deadline=lambda t: calls.append(t) or 0.0)[1]) == 1 and calls


def _volume(x: np.ndarray) -> Volume:
    return Volume(data=x, geometry=Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                  intensity=Intensity(dtype=str(x.dtype), slope=1.0, intercept=0.0, units=None,
                                      min=float(x.min()), max=float(x.max())),
                  source={"kind": "array"})


def test_compress_skips_the_fit_where_the_near_lossless_coder_is_far_ahead(tmp_path, monkeypatch):
    from inrv.codec.latent import ratemodel
    from inrv.codec.latent.model import LatentModel
    from inrv.cli.output import encode_summary_line

    src = tmp_path / "p.nii.gz"
    inrv.save(_volume(_phantom()), src)

    def no_training(*a, **k):
        raise AssertionError("trained although the near-lossless file is far ahead")
    monkeypatch.setattr(LatentModel, "fit", no_training)
    monkeypatch.setattr(ratemodel, "predict", lambda arr, bpv=None, psnr=None: 5.0 if bpv else 50.0)
    s = inrv.compress(src, tmp_path / "a.inrv", "latent-tiny", target_bpv=1.5)
    f = inrv.read(tmp_path / "a.inrv")
    assert f.encoded.model == "nearlossless" and f.encoded.config["fallback"] == "latent"
    assert s.bpv <= 1.5 and s.max_abs_err <= f.encoded.config["max_error"]
    assert "instead of latent" in encode_summary_line("p.nii.gz", "a.inrv", s)
    s = inrv.compress(src, tmp_path / "b.inrv", "latent-tiny", target_psnr=40.0)
    assert inrv.read(tmp_path / "b.inrv").encoded.model == "nearlossless" and s.psnr >= 40.0
    # best_coder=False keeps the model asked for
    with pytest.raises(AssertionError, match="far ahead"):
        inrv.compress(src, tmp_path / "c.inrv", "latent-tiny", target_bpv=1.5, best_coder=False)


def test_compress_keeps_the_better_of_the_two(tmp_path, monkeypatch):
    from inrv.codec.latent import ratemodel

    src = tmp_path / "p.nii.gz"
    inrv.save(_volume(_phantom()), src)
    # the rate model expects a neural fit far ahead: both are made, and the better one is written
    monkeypatch.setattr(ratemodel, "predict", lambda arr, bpv=None, psnr=None: 60.0 if bpv else 0.01)
    kw = dict(steps=4, polish_steps=0, search_iters=2)
    s = inrv.compress(src, tmp_path / "a.inrv", "latent-tiny", target_bpv=1.5, **kw)
    n = inrv.compress(src, tmp_path / "n.inrv", "latent-tiny", target_bpv=1.5, best_coder=False, **kw)
    rival, _ = encode_to_target(_phantom(), bpv=1.5)
    assert inrv.read(tmp_path / "n.inrv").encoded.model == "latent"
    if n.psnr > rival.psnr:
        assert inrv.read(tmp_path / "a.inrv").encoded.model == "latent"
    else:   # 4 training steps: the near-lossless file is the better one at this rate
        assert inrv.read(tmp_path / "a.inrv").encoded.model == "nearlossless" and s.psnr >= n.psnr


def test_cli_says_which_coder_it_stored_and_model_only_keeps_the_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from inrv.cli.main import main
    from inrv.codec.latent import ratemodel

    src = tmp_path / "p.nii.gz"
    inrv.save(_volume(_phantom()), src)
    monkeypatch.setattr(ratemodel, "predict", lambda arr, bpv=None, psnr=None: 5.0)
    r = CliRunner().invoke(main, ["encode", str(src), "-o", str(tmp_path / "a.inrv"), "--preset", "latent-tiny",
                                  "--bpv", "1.5", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "stored near-lossless (max error" in r.output and "instead of latent" in r.output
    r = CliRunner().invoke(main, ["encode", str(src), "-o", str(tmp_path / "b.inrv"), "--preset", "latent-tiny",
                                  "--bpv", "1.5", "--steps", "3", "--model-only", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "instead of" not in r.output and inrv.read(tmp_path / "b.inrv").encoded.model == "latent"


def _with_background(shape=(24, 22, 20)) -> np.ndarray:
    """The phantom inside a zero background (two thirds of the voxels), as MRI templates are."""
    x = _phantom(shape).astype(np.int64)
    z, y, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return np.where(z ** 2 + y ** 2 + w ** 2 < 0.55, np.maximum(x, 1), 0).astype(np.int16)


def test_binnings_keep_the_bound_and_the_grid_keeps_the_background():
    x = _with_background()
    m = NearLosslessModel()
    fits = {b: m.fit(x, NearLosslessConfig(max_error=3, binning=b)) for b in ("loop", "grid", "auto")}
    for b, enc in fits.items():
        rec = inrv.decode(enc)
        assert np.max(np.abs(rec - x)) <= 3, b
    assert "grid" not in fits["loop"].config and "grid" in fits["grid"].config
    assert np.all(inrv.decode(fits["grid"])[x == 0] == 0)          # the most frequent value is exact
    sizes = {b: sum(len(v) for v in e.sections.values()) for b, e in fits.items()}
    assert sizes["auto"] == min(sizes["loop"], sizes["grid"])
    with pytest.raises(inrv.InputError):
        m.fit(x, NearLosslessConfig(max_error=3, binning="nope"))


def test_compress_also_tries_the_grid_alone(tmp_path, monkeypatch):
    from inrv.codec.latent import ratemodel
    from inrv.codec.nearlossless import target

    x = _with_background()
    src = tmp_path / "b.nii.gz"
    inrv.save(_volume(x), src)
    monkeypatch.setattr(ratemodel, "predict", lambda arr, bpv=None, psnr=None: 5.0)
    calls = []
    real = target.encode_to_target

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append((k.get("binning", "auto"), out[0]))
        return out
    monkeypatch.setattr(target, "encode_to_target", spy)
    s = inrv.compress(src, tmp_path / "b.inrv", "latent-tiny", target_bpv=1.2)
    (b1, first), (b2, grid) = calls
    assert (b1, b2) == ("auto", "grid")
    assert s.bpv <= 1.2 and s.psnr == pytest.approx(max(first.psnr, grid.psnr if grid else -1.0))
    f = inrv.read(tmp_path / "b.inrv")
    if "grid" in f.encoded.config:
        assert np.all(inrv.restore(tmp_path / "b.inrv").data[x == 0] == 0)
    # why the second pass: on the coder's own bytes the search on the smaller binning at each bound
    # lands on in-loop bins, and the grid alone is better at the same rate
    auto, _ = real(x, bpv=1.2)
    grid, _ = real(x, bpv=1.2, binning="grid", first_bound=auto.max_error)
    assert "grid" not in auto.enc.config and grid.bpv <= 1.2 and grid.psnr > auto.psnr + 1.0
