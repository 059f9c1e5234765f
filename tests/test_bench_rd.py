"""The rate-distortion benchmark (benchmarks/rd.py, classical.py, bdrate.py) and the foreground PSNR metric."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inrv.codec import metrics

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # rd.py imports its siblings by name, as when run as a script
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


bdrate = _load("bdrate")
classical = _load("classical")
rd = _load("rd")


def _phantom(n: int = 24) -> np.ndarray:
    """A uint8 head-like phantom: zero background, a bright shell, a smooth interior, a little noise."""
    rng = np.random.default_rng(0)
    g = np.indices((n, n, n)).astype(np.float64) - (n - 1) / 2
    r = np.sqrt((g ** 2).sum(0)) / (n / 2)
    v = np.where(r < 0.85, 80 + 60 * np.cos(3 * g[0] / n) + 30 * np.sin(5 * g[1] / n), 0.0)
    v = np.where((r > 0.7) & (r < 0.85), 200.0, v)
    v = v + np.where(r < 0.85, rng.normal(0, 3, v.shape), 0)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- metrics by hand


def test_psnr_foreground_by_hand():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 100                      # 32 foreground voxels (> min = 0), range 0..100
    ref[0, 0, 0] = 200                 # range becomes 0..200
    test = ref.astype(np.int64).copy()
    test[1, :2, :2] += 4               # 4 foreground voxels off by 4
    test[3, 3, 3] = 2                  # 1 background voxel off by 2
    # whole volume: MSE = (4*16 + 4) / 64; foreground: MSE = 4*16 / 32
    assert metrics.psnr(ref, test) == pytest.approx(10 * math.log10(200**2 / (68 / 64)))
    assert metrics.psnr_foreground(ref, test) == pytest.approx(10 * math.log10(200**2 / (64 / 32)))
    assert metrics.foreground_mask(ref).sum() == 32
    assert metrics.psnr_foreground(ref, test, threshold=150) == math.inf   # only the 200 voxel, exact
    assert math.isnan(metrics.psnr_foreground(np.zeros((3, 3, 3)), np.ones((3, 3, 3))))


def test_fake_codec_bpv_psnr_and_dtype_restore(monkeypatch):
    ref = np.full((8, 8, 8), 10, np.uint8)
    ref[:4] = 250
    err = np.zeros(ref.shape)
    err[0, 0, :4] = 20.4          # 250 + 20.4 -> clipped to 255: error 5 on 4 voxels
    err[7, 7, 7] = -3.6           # 10 - 3.6 -> rounded to 6: error 4 on 1 voxel

    def fake(vol, p):
        return 1234, vol.astype(np.float64) + err, 0.5, 0.25

    monkeypatch.setitem(classical.CODECS, "fake", classical.Codec("fake", "3D", "Fake", "p", (1,), (1,), fake))
    (row,) = rd.run_classical("v", ref, "fake", quick=True, with_ssim=True)
    assert row.bytes == 1234 and row.bpv == pytest.approx(8 * 1234 / 512)
    mse = (4 * 25 + 16) / 512
    assert row.psnr == pytest.approx(10 * math.log10(240**2 / mse))
    fg_mse = 4 * 25 / 256            # foreground = voxels > 10: the 256 voxels at 250
    assert row.psnr_fg == pytest.approx(10 * math.log10(240**2 / fg_mse))
    assert row.max_abs_err == 5
    assert 0 < row.ssim < 1
    assert (row.enc_s, row.dec_s) == (0.5, 0.25)


def test_to_dtype_rounds_and_clips():
    out = classical.to_dtype(np.array([-3.2, 0.5, 1.5, 65535.6, 70000]), np.uint16)
    assert out.dtype == np.uint16
    assert out.tolist() == [0, 0, 2, 65535, 65535]   # numpy rounds half to even


# ---------------------------------------------------------------- BD-rate and interpolation


def _curve():
    r = np.array([0.2, 0.35, 0.5, 0.8, 1.2, 2.0])
    return r, 30 + 9 * np.log2(r / 0.2) - 0.4 * np.log2(r / 0.2) ** 2


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_self_zero_and_double_rate(method):
    r, q = _curve()
    assert bdrate.bd_rate(r, q, r, q, method=method) == pytest.approx(0, abs=1e-9)
    assert bdrate.bd_rate(r, q, 2 * r, q, method=method) == pytest.approx(100, rel=1e-9)
    assert bdrate.bd_rate(r, q, r / 2, q, method=method) == pytest.approx(-50, rel=1e-9)
    # a test curve with only part of the anchor's PSNR range still compares on the overlap
    assert bdrate.bd_rate(r, q, 2 * r[:3], q[:3], method=method) == pytest.approx(100, abs=0.5)  # fits differ slightly
    assert math.isnan(bdrate.bd_rate(r, q, r, q + 100))   # no overlap


def test_rd_hull_drops_dominated_and_lossless():
    r, q = bdrate.rd_hull([1.0, 0.5, 2.0, 1.5, 3.0], [40, 30, 45, 39, math.inf])
    assert r.tolist() == [0.5, 1.0, 2.0] and q.tolist() == [30, 40, 45]


def test_quality_at_interpolates_and_marks_extrapolation():
    r, q = [0.25, 0.5, 1.0], [30.0, 36.0, 42.0]       # linear in log2(rate)
    assert bdrate.quality_at(r, q, 0.5) == (36.0, False)
    v, ex = bdrate.quality_at(r, q, 2 ** -1.5)
    assert not ex and v == pytest.approx(33.0, abs=1e-9)
    v, ex = bdrate.quality_at(r, q, 2 ** 0.25)
    assert ex and v == pytest.approx(43.5, abs=1e-9)
    v, ex = bdrate.quality_at(r, q, 0.25 / 2 ** 0.25)
    assert ex and v == pytest.approx(28.5, abs=1e-9)
    assert math.isnan(bdrate.quality_at(r, q, 1.4142)[0])  # more than 1.25x beyond the last point
    assert bdrate.quality_at(r, q, 1.4142, max_extrapolation=1.5)[0] == pytest.approx(45.0, abs=1e-3)
    # exact reconstruction at 1.0: every higher rate is exact too; a 30 dB end jump is not extrapolated
    assert bdrate.quality_at([0.5, 1.0], [36.0, math.inf], 1.2) == (math.inf, False)
    assert math.isnan(bdrate.quality_at([0.5, 1.0], [40.0, 70.0], 1.1, max_end_step=10)[0])
    assert bdrate.quality_at([0.5, 1.0], [40.0, 70.0], 1.1)[1]
    assert bdrate.rate_at(r, q, 39.0) == pytest.approx(2 ** -0.5, rel=1e-6)


# ---------------------------------------------------------------- the CLI end to end


@pytest.mark.slow
def test_rd_quick_end_to_end(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = _phantom()
    src = tmp_path / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, str(BENCH / "rd.py"), str(src), "--quick", "--out", str(out),
                        "--inrv-presets", "tiny:steps=3"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "rd.csv")))
    codecs = {r["codec"] for r in rows}
    assert set(classical.CODECS) | {"inrv:tiny:steps=3"} <= codecs, codecs
    for r in rows:
        assert r["bytes"], r                      # every point ran (none skipped)
        assert float(r["bpv"]) == pytest.approx(8 * int(r["bytes"]) / vol.size, rel=1e-5)
        if r["kind"] == "lossless":
            assert r["psnr"] == "inf" and float(r["max_abs_err"]) == 0 and float(r["ssim"]) == 1
        else:
            # (a tight error bound can be exact after rounding to integers: PSNR inf is allowed)
            # (3 training steps of inrv give a poor but real reconstruction)
            floor = 0 if r["kind"] == "inrv" else 15
            assert float(r["psnr"]) > floor and 0 < float(r["bpv"]) < 16, r
        if r["codec"] == "jpegls" or r["kind"] == "bounded":     # NEAR / ABS / PWE / E bound the error
            assert float(r["max_abs_err"]) <= float(r["param"].split("=")[1])
    sperr = sorted((float(r["bpv"]), float(r["psnr"])) for r in rows if r["codec"] == "sperr")
    assert [q for _, q in sperr] == sorted(q for _, q in sperr)   # more bits, better PSNR
    md = (out / "rd.md").read_text(encoding="utf-8")
    assert "BD-rate against SPERR" in md and "0.775 bpv" in md and "inrv tiny" in md
    for name in ("rd_psnr_phantom.png", "rd_ssim_phantom.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_dominating_point():
    def row(codec, kind, bpv, psnr):
        return rd.Row("v", codec, codec, kind, "", bytes=100, bpv=bpv, psnr=psnr)
    r = row("inrv", "inrv", 0.30, 40.0)
    assert rd.dominating(r, [row("a", "3D", 0.31, 45.0), row("b", "3D", 0.29, 39.0)]) is None
    assert rd.dominating(r, [row("a", "3D", 0.30, 40.0)]) is None            # equal is not dominated
    d = rd.dominating(r, [row("a", "3D", 0.30, 41.0), row("b", "bounded", 0.25, 40.5), row("ll", "lossless", 0.5, math.inf)])
    assert d.codec == "b"
    assert rd.dominating(row("inrv", "inrv", 0.6, 48.0), [row("ll", "lossless", 0.5, math.inf)]).codec == "ll"


def test_rd_rejects_unknown_codec(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH / "rd.py"), "x.nii.gz", "--codecs", "nope", "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown codec" in p.stderr
    p = subprocess.run([sys.executable, str(BENCH / "rd.py"), "x.nii.gz", "--inrv-presets", "no-such-preset",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown preset" in p.stderr
    p = subprocess.run([sys.executable, str(BENCH / "rd.py"), str(tmp_path / "missing.nii.gz"), "--codecs", "zstd",
                        "--inrv-presets", "--out", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "cannot read" in p.stderr and "Traceback" not in p.stderr


def test_inrv_point_parsing_and_curves():
    preset, ov = rd.parse_inrv_point("balanced:target_bpv=0.5:steps=100:ds=2,2,1:seed=none")
    assert preset == "balanced" and ov == {"target_bpv": 0.5, "steps": 100, "ds": "2,2,1", "seed": None}
    # rate targets move along one curve; other overrides make a different curve
    assert rd._curve_id(preset, ov) == rd._curve_id(preset, {"target_bpv": 2.0, "steps": 100, "ds": "2,2,1",
                                                              "seed": None})
    assert rd._curve_id("tiny", {}) != rd._curve_id("tiny", {"steps": 3})
    with pytest.raises(ValueError):
        rd.parse_inrv_point("tiny:steps")
