"""``inrv compare A B`` (figures on known pairs, .inrv inputs, the PNG), the display window, ``python -m inrv``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import inrv
from inrv.cli.main import main
from inrv.compare import compare, load_any
from inrv.errors import InputError
from inrv.formats.volume import Geometry, Intensity, Volume
from inrv.preview import CT_WINDOW, display_window

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def phantom(shape=(20, 18, 16)) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return (500 * np.exp(-((i - 10) ** 2 + (j - 9) ** 2 + (k - 8) ** 2) / 30) + 3 * i).astype(np.int16)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_known_pairs():
    a = phantom()
    rng = float(a.max()) - float(a.min())
    same = compare(Volume(a), Volume(a.copy()))
    assert same["identical"] and same["max_abs_err"] == 0 and math.isinf(same["psnr"]) and same["ssim"] == 1.0

    shifted = compare(Volume(a), Volume(a + np.int16(3)))          # every voxel off by 3
    assert shifted["max_abs_err"] == 3 and shifted["mean_abs_err"] == 3 and shifted["rmse"] == pytest.approx(3)
    assert all(v == pytest.approx(3) for v in shifted["percentiles"].values())
    assert shifted["psnr"] == pytest.approx(20 * math.log10(rng / 3))
    assert shifted["data_range"] == rng and not shifted["identical"]

    b = a.copy()
    flat = b.reshape(-1)
    hit = np.random.default_rng(0).choice(flat.size, flat.size // 100, replace=False)   # 1 % of the voxels
    flat[hit] += 10
    sparse = compare(Volume(a), Volume(b))
    assert sparse["max_abs_err"] == 10
    assert sparse["percentiles"]["50"] == 0 and sparse["percentiles"]["90"] == 0
    assert sparse["percentiles"]["99.9"] == 10
    assert sparse["mean_abs_err"] == pytest.approx(10 * hit.size / flat.size)
    assert sparse["psnr"] == pytest.approx(10 * math.log10(rng**2 / (100 * hit.size / flat.size)))
    assert 0.5 < sparse["ssim"] < 1.0


def test_errors_are_in_physical_units():
    a = phantom()
    it = Intensity(dtype="int16", slope=2.0, intercept=-100.0, units="HU", min=float(a.min()), max=float(a.max()))
    d = compare(Volume(a, intensity=it), Volume(a + np.int16(1), intensity=it))
    assert d["max_abs_err"] == pytest.approx(2.0) and d["units"] == "HU"
    assert d["data_range"] == pytest.approx(2.0 * (float(a.max()) - float(a.min())))


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="shapes"):
        compare(Volume(phantom()), Volume(phantom((20, 18, 15))))


def test_window_follows_the_modality():
    a = phantom()
    ct = Volume(a, intensity=Intensity(dtype="int16", units="HU", min=float(a.min()), max=float(a.max())))
    lo, hi, label = display_window(ct)
    assert (lo, hi) == (CT_WINDOW[0] - CT_WINDOW[1] / 2, CT_WINDOW[0] + CT_WINDOW[1] / 2) and "CT" in label
    lo, hi, _ = display_window(Volume(a))                 # no units: A's 0.5-99.5th percentiles
    assert (lo, hi) == pytest.approx(tuple(np.percentile(a.astype(np.float64), (0.5, 99.5))))
    assert display_window(Volume(a), window=(0, 10))[:2] == (0.0, 10.0)


def test_cli_compare_json_and_png(tmp_path):
    a = phantom()
    geo = Geometry((1.0, 1.2, 2.0), (0.0, 0.0, 0.0))
    inrv.save(Volume(a, geometry=geo), tmp_path / "a.nii.gz")
    inrv.save(Volume(a + np.int16(2), geometry=geo), tmp_path / "b.nrrd")
    png = tmp_path / "check.png"
    r = run("compare", tmp_path / "a.nii.gz", tmp_path / "b.nrrd", "--png", png, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["max_abs_err"] == 2 and d["percentiles"]["50"] == 2 and d["same_geometry"]
    head = png.read_bytes()
    assert head[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert w > 600 and h > 600

    r = run("compare", tmp_path / "a.nii.gz", tmp_path / "b.nrrd", "--png", png)   # exists, no -f
    assert r.exit_code == 2 and "exists" in r.stderr and r.stderr.count("\n") == 1
    r = run("compare", tmp_path / "a.nii.gz", tmp_path / "b.nrrd")                 # text on stdout
    assert r.exit_code == 0 and "PSNR" in r.stdout and "p99.9 2" in r.stdout
    r = run("compare", tmp_path / "a.nii.gz", tmp_path / "missing.nii.gz")
    assert r.exit_code == 2 and r.stderr.startswith("inrv: error:") and "Traceback" not in r.stderr


def test_compare_decodes_inrv_files(tmp_path):
    """A golden .inrv file against its reference: the figures its encoder recorded."""
    meta = json.loads((GOLDEN / "golden.json").read_text())
    entry = next(e for e in meta["files"] if e["file"] == "latent-tiny.inrv")
    ref = np.load(GOLDEN / meta["reference"]).astype(entry["dtype"])
    g = entry["geometry"]
    inrv.save(Volume(ref, geometry=Geometry(tuple(g["spacing"]), tuple(g["origin"]), tuple(g["direction"]))),
              tmp_path / "ref.nii.gz")
    r = run("compare", tmp_path / "ref.nii.gz", GOLDEN / "latent-tiny.inrv", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["psnr"] == pytest.approx(entry["psnr_db"], abs=entry["psnr_band_db"])
    assert d["same_geometry"] and d["dtypes"] == [entry["dtype"], entry["dtype"]]
    decoded = load_any(GOLDEN / "latent-tiny.inrv")
    assert decoded.data.dtype == np.dtype(entry["dtype"]) and decoded.shape == tuple(entry["shape"])


def test_python_dash_m_inrv_version():
    out = subprocess.run([sys.executable, "-m", "inrv", "--version"], capture_output=True, text=True, env=ENV,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"inrv {inrv.__version__}")


def test_encode_preview_draws_the_picture(tmp_path):
    a = phantom((16, 16, 16))
    inrv.save(Volume(a), tmp_path / "a.nii.gz")
    (tmp_path / "taken.png").write_bytes(b"mine")
    r = run("encode", tmp_path / "a.nii.gz", "-o", tmp_path / "a.inrv", "--preset", "tiny", "--epochs", "3",
            "--preview", tmp_path / "taken.png")                       # refused before any training
    assert r.exit_code == 2 and not (tmp_path / "a.inrv").exists()
    assert (tmp_path / "taken.png").read_bytes() == b"mine"
    r = run("encode", tmp_path / "a.nii.gz", "-o", tmp_path / "a.inrv", "--preset", "tiny", "--epochs", "3",
            "--preview", tmp_path / "a.png", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["preview"] == str(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG_MAGIC
