"""A small BIDS dataset through ``inrv batch`` and ``inrv decode FOLDER``: images encoded and decoded, every
other file byte-identical (a decoded image's sidecar gains only the lossy note), and the decoded dataset
accepted by the BIDS validator (the npm ``bids-validator``, installed here when node and npm exist)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import inrv
from inrv.cli.main import main
from inrv.formats.bids import LOSSY_KEYS, mark_lossy

FAST = ["--preset", "tiny", "--epochs", "3", "--seed", "1", "--workers", "1", "--threads", "1"]
VALIDATOR_VERSION = "1.15.0"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def nifti(path: Path, shape, seed: int) -> None:
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij")
    vol = 400 * np.exp(-(i**2 + j**2 + k**2) * 3) + 20 * rng.random(shape[:3])
    data = vol if len(shape) == 3 else np.stack([vol + 5 * t for t in range(shape[3])], axis=-1)
    img = nib.Nifti1Image(data.astype(np.int16), np.diag([2.0, 2.0, 2.5, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    if len(shape) == 4:
        img.header["pixdim"][4] = 2.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def make_dataset(root: Path) -> None:
    files = {
        "dataset_description.json": json.dumps({"Name": "inrv BIDS test", "BIDSVersion": "1.8.0",
                                                "DatasetType": "raw", "Authors": ["inrv"]}, indent=4) + "\n",
        "README": "A tiny dataset that checks inrv keeps a BIDS tree intact.\n",
        "CHANGES": "1.0.0 2026-01-01\n  - first version\n",
        "participants.tsv": "participant_id\tage\nsub-01\t30\nsub-02\t41\n",
        "participants.json": json.dumps({"age": {"Description": "age", "Units": "year"}}) + "\n",
        ".bidsignore": "extra_data/\n",
        "task-rest_bold.json": json.dumps({"TaskName": "rest", "RepetitionTime": 2.0}) + "\n",
        "sub-01/anat/sub-01_T1w.json": '{\n    "MagneticFieldStrength": 3,\n    "EchoTime": 0.0029\n}\n',
        "sub-01/dwi/sub-01_dwi.bval": "0 1000 1000\n",
        "sub-01/dwi/sub-01_dwi.bvec": "0 1 0\n0 0 1\n0 0 0\n",
        "sub-01/dwi/sub-01_dwi.json": json.dumps({"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05}) + "\n",
        "sub-01/sub-01_scans.tsv": "filename\tacq_time\nanat/sub-01_T1w.nii.gz\t2026-01-01T10:00:00\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    nifti(root / "sub-01/anat/sub-01_T1w.nii.gz", (16, 16, 12), 1)
    nifti(root / "sub-02/anat/sub-02_T1w.nii", (16, 14, 12), 2)          # uncompressed .nii, no sidecar
    nifti(root / "sub-01/dwi/sub-01_dwi.nii.gz", (12, 12, 8, 3), 3)        # 4D: copied as it is
    nifti(root / "sub-01/func/sub-01_task-rest_bold.nii.gz", (10, 10, 6, 4), 4)


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bids_dataset_survives_batch_and_decode(tmp_path):
    src, enc, dec = tmp_path / "ds", tmp_path / "enc", tmp_path / "dec"
    make_dataset(src)
    before = all_files(src)

    r = run("batch", src, "-o", enc, *FAST, "--no-progress")
    assert r.exit_code == 0, r.stderr
    assert all_files(src) == before                                        # the input is never touched
    encoded = all_files(enc)
    assert {"sub-01/anat/sub-01_T1w.inrv", "sub-02/anat/sub-02_T1w.inrv"} <= set(encoded)
    for rel, data in before.items():
        if rel.endswith("_T1w.nii.gz") or rel.endswith("_T1w.nii"):
            assert rel not in encoded
        else:                                                            # 4D images included
            assert encoded[rel] == data, rel

    r = run("decode", enc, "-o", dec, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["bids"] and sorted(report["decoded"]) == ["sub-01/anat/sub-01_T1w.nii.gz",
                                                            "sub-02/anat/sub-02_T1w.nii"]
    after = all_files(dec)
    assert set(after) == set(before) | {"sub-02/anat/sub-02_T1w.json"}   # no manifest, no .inrv; a new sidecar
    sidecars = {"sub-01/anat/sub-01_T1w.json", "sub-02/anat/sub-02_T1w.json"}
    for rel, data in before.items():
        if rel.endswith("_T1w.nii.gz") or rel.endswith("_T1w.nii") or rel in sidecars:
            continue
        assert after[rel] == data, rel                                   # byte-identical
    for rel in ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii"):
        a, b = inrv.load(src / rel), inrv.load(dec / rel)
        assert b.shape == a.shape and b.data.dtype == a.data.dtype
        np.testing.assert_allclose(b.geometry.spacing, a.geometry.spacing, rtol=1e-6)
    old = json.loads(before["sub-01/anat/sub-01_T1w.json"])
    new = json.loads(after["sub-01/anat/sub-01_T1w.json"])
    assert {k: v for k, v in new.items() if k not in LOSSY_KEYS} == old
    assert after["sub-01/anat/sub-01_T1w.json"].startswith(before["sub-01/anat/sub-01_T1w.json"].rstrip()[:-1].rstrip())
    assert new["LossyImageCompressionRatio"] > 0 and new["LossyImageCompressionMethod"].startswith("inrv ")
    if new["InrvCompression"]["MaxAbsError"] == 0:        # compress kept a lossless file (smaller than the fit)
        assert new["LossyImageCompression"] == "00" and "PSNR" not in new["InrvCompression"]
    else:
        assert new["LossyImageCompression"] == "01" and "PSNR" in new["InrvCompression"]
    created = json.loads(after["sub-02/anat/sub-02_T1w.json"])
    assert set(created) == set(LOSSY_KEYS)

    r = run("decode", enc, "-o", dec)                                     # outputs exist: refused, nothing touched
    assert r.exit_code == 2 and "exists" in r.stderr
    assert all_files(dec) == after

    _validate(dec)                    # the decoded tree is a valid dataset ...
    with pytest.raises(AssertionError, match="NOT_INCLUDED|NO_VALID_DATA"):
        _validate(enc)                # ... while the compressed tree (.inrv, no images) is not: the check can fail


def test_mark_lossy_keeps_the_text_and_rewrites_on_a_second_pass(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"A": 1}')
    mark_lossy(p, {"LossyImageCompression": "01"})
    assert p.read_text().startswith('{"A": 1,') and json.loads(p.read_text()) == {"A": 1, "LossyImageCompression": "01"}
    mark_lossy(p, {"LossyImageCompression": "01", "LossyImageCompressionRatio": 3.0})
    assert json.loads(p.read_text()) == {"A": 1, "LossyImageCompression": "01", "LossyImageCompressionRatio": 3.0}
    e = tmp_path / "e.json"
    e.write_text("{ }\n")
    mark_lossy(e, {"LossyImageCompression": "01"})
    assert json.loads(e.read_text()) == {"LossyImageCompression": "01"}


# ------------------------------------------------------------------ the BIDS validator (npm), when node is here

def _validator() -> list[str] | None:
    exe = shutil.which("bids-validator")
    if exe:
        return [exe]
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        return None
    cache = Path(os.environ.get("INRV_TEST_CACHE", Path.home() / ".cache" / "inrv-tests")) / f"bids-validator-{VALIDATOR_VERSION}"
    script = cache / "node_modules" / "bids-validator" / "bin" / "bids-validator"
    if not script.exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--loglevel=error",
                            f"bids-validator@{VALIDATOR_VERSION}"], check=True, capture_output=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install the npm bids-validator: {e}")
    return [node, str(script)]


def _validate(root: Path) -> None:
    cmd = _validator()
    if cmd is None:
        pytest.skip("node/npm not found: the BIDS validator (npm bids-validator) cannot run here")
    out = subprocess.run([*cmd, "--json", str(root)], capture_output=True, text=True,
                         timeout=600)
    try:
        result = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"bids-validator gave no JSON (exit {out.returncode}): {out.stderr[-2000:]}")
    errors = result.get("issues", {}).get("errors", [])
    assert not errors, json.dumps(errors, indent=1)[:4000]
