"""Decode every committed golden ``.inrv`` file (tests/golden/v1/, made by tests/golden/make_golden.py).

A reader must keep decoding these files forever (docs/format.md, section 9). Decoded output is
compared with a tolerance band, not bit for bit: torch promises no bit-exactness across versions,
platforms or devices. Skips cleanly when no golden files exist yet.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import inrv
from inrv.codec.metrics import psnr

GOLDEN = Path(os.environ.get("INRV_GOLDEN_DIR", Path(__file__).resolve().parents[1] / "golden" / "v1"))
META_PATH = GOLDEN / "golden.json"

if not META_PATH.exists():
    pytest.skip(f"no golden files yet ({META_PATH}); run tests/golden/make_golden.py", allow_module_level=True)

META = json.loads(META_PATH.read_text(encoding="utf-8"))
ENTRIES = META["files"]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.load(GOLDEN / META["reference"], allow_pickle=False)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_golden_header(entry):
    """Header facts, torch-free: what ``inrv info`` reports."""
    path = GOLDEN / entry["file"]
    d = inrv.info(path).to_dict()
    assert d["format_version"].split(".")[0] == META["format"].split(".")[0]
    assert d["model"] == entry["model"]
    assert d["shape"] == entry["shape"] and d["dtype"] == entry["dtype"]
    assert d["file_bytes"] == path.stat().st_size == entry["file_bytes"]
    assert d["bpv"] == pytest.approx(8 * d["file_bytes"] / np.prod(entry["shape"]))
    f = inrv.read(path)
    g = entry["geometry"]
    assert list(f.geometry.spacing) == g["spacing"]
    assert list(f.geometry.origin) == g["origin"]
    assert list(f.geometry.direction) == g["direction"]


# not slow: every golden file is 16^3 and decodes in about a second, so the fast subset checks them all
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_golden_decode(entry, reference, tmp_path):
    pytest.importorskip("torch")

    path = GOLDEN / entry["file"]
    decoded = inrv.restore(path, device="cpu").data
    assert decoded.shape == tuple(entry["shape"]) == reference.shape
    assert decoded.dtype == np.dtype(entry["dtype"])
    # quality against the original phantom, within the band recorded at generation time
    band = entry["psnr_band_db"]
    got = psnr(reference, decoded)
    assert got == entry["psnr_db"] or abs(got - entry["psnr_db"]) <= band     # inf == inf for a lossless file
    # and close to what was decoded at generation time (bit-exact on the same platform, usually)
    then = np.load(GOLDEN / entry["decoded"], allow_pickle=False)
    same = hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest() == entry["decoded_sha256"]
    assert same or psnr(then, decoded, float(reference.max()) - float(reference.min())) >= entry["self_psnr_min_db"]

    # the whole way out: decompress to NIfTI, read it back, geometry and dtype restored
    out = tmp_path / "out.nii.gz"
    inrv.decompress(path, out, device="cpu")
    back = inrv.load(out)
    assert back.data.dtype == np.dtype(entry["dtype"]) and back.shape == tuple(entry["shape"])
    g = entry["geometry"]
    np.testing.assert_allclose(back.geometry.spacing, g["spacing"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(back.geometry.origin, g["origin"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, g["direction"], rtol=0, atol=1e-5)
