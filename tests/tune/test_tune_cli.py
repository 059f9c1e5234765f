"""``inrv tune`` end to end on a tiny phantom: a 2x2x2 grid at a few steps writes the report, the plots and a
configuration ``inrv encode`` accepts; a rerun skips the finished cells; bad grids are one-line usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import inrv
from inrv.cli.main import main

FAST = ["--preset", "tiny", "--steps", "2", "--prefit", "1", "--points", "512",
        "--latent-curve", "1e-2", "--latent-preset", "latent-tiny", "--latent-steps", "3", "--no-progress"]
GRID = ["--grid", "ds=2,4", "nc=2,4", "sn=6,10"]


def phantom(path: Path) -> Path:
    x, y, z = np.meshgrid(*[np.arange(12, dtype=np.float64)] * 3, indexing="ij")
    vol = 200 * np.exp(-((x - 6) ** 2 + (y - 5) ** 2 + (z - 6) ** 2) / 12.0) + 30 * np.sin(x / 2)
    # float32: integer voxels this small would be stored losslessly (smaller than any model), see grid.py
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), str(path))
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    src = phantom(d / "ph.nii.gz")
    out = d / "t"
    r = run("tune", src, *GRID, *FAST, "-o", out, "--json", "--apply", d / "applied.inrv")
    assert r.exit_code == 0, r.stderr
    return d, src, out, json.loads(r.stdout)


def test_report_plots_and_cells(tuned):
    d, src, out, doc = tuned
    for name in ("tune.md", "tune.json", "cells.csv", "marginals.png", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "tune.json").read_text())
    assert rep["cells"] == 8 and rep["cells_ok"] == 8
    assert rep["grid"] == {"ds": [2, 4], "nc": [2, 4], "sn": [6, 10]}
    cells = sorted(p.name for p in (out / "cells").glob("paper-*.json"))
    assert len(cells) == 8
    csv_rows = (out / "cells.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 8 + 1                     # header, 8 cells, 1 latent-curve fit
    # the report's trade-off point is the Eq. 8 argmin of what the cells measured
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("paper-*.json")]
    lag = {r["name"]: 1 / r["psnr"] + 1 - abs(r["ssim"]) + 1 - r["cr_paper"]
           + 0.05 * sum((rk / 1) ** 2 for rk in (r["point"]["ds"] == 4, r["point"]["nc"] == 4, r["point"]["sn"] == 10))
           for r in recs}
    best = min(lag, key=lag.get)
    assert best == "paper-" + "-".join(f"{k}{doc[k]}" for k in ("ds", "nc", "sn"))
    assert rep["point"]["L"] == pytest.approx(lag[best])
    # real bpv from the stored file
    cell = json.loads((out / "cells" / f"{best}.json").read_text())
    assert cell["bytes"] == (out / cell["file"]).stat().st_size
    assert doc["bpv"] == pytest.approx(8 * cell["bytes"] / 12 ** 3)
    assert "Trade-off point" in (out / "tune.md").read_text()


def test_json_configuration_is_accepted_by_encode(tuned):
    d, src, out, doc = tuned
    assert doc["model"] == "paper" and doc["encode_args"][:2] == ["--model", "paper"]
    r = run("encode", src, *doc["encode_args"], "--preset", "tiny", "--epochs", "2", "-o", d / "enc.inrv", "--json")
    assert r.exit_code == 0, r.stderr
    cfg = inrv.info(d / "enc.inrv").details["config"]
    assert (cfg["ds"][0], cfg["nc"], cfg["sn"]) == (doc["ds"], doc["nc"], doc["sn"])
    # --apply wrote the trade-off cell's file
    assert inrv.info(d / "applied.inrv").details["config"]["sn"] == doc["sn"]


def test_rerun_skips_finished_cells(tuned):
    d, src, out, doc = tuned
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("paper-*")}
    r = run("tune", src, *GRID, *FAST, "-o", out, "--json", "-v")
    assert r.exit_code == 0, r.stderr
    assert "8 of 8 cells already done" in r.stderr       # (a failed latent-curve cell would be tried again)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("paper-*")} == before
    assert json.loads(r.stdout)["sn"] == doc["sn"]
    # --no-fit: a report on the finished cells of a larger grid, fitting nothing
    r = run("tune", src, "--grid", "ds=2,4", "nc=2,4", "sn=6,10,14", *FAST, "-o", out, "--no-fit", "--no-plots")
    assert r.exit_code == 0, r.stderr
    rep = json.loads((out / "tune.json").read_text())
    assert (rep["cells_ok"], rep["cells_in_grid"]) == (8, 12)
    assert not (out / "cells" / "paper-ds2-nc2-sn14.json").exists()
    # a changed setting (steps) means the cell is not finished: it is fitted again, the others are left alone
    cell = out / "cells" / "paper-ds2-nc2-sn6.json"
    r = run("tune", src, "--grid", "ds=2", "nc=2", "sn=6", *FAST[:2], "--steps", "3", *FAST[4:], "-o", out, "-v")
    assert r.exit_code == 0, r.stderr
    assert json.loads(cell.read_text())["settings"]["steps"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("paper-*")}
    assert {k for k in before if after[k] != before[k]} == {"paper-ds2-nc2-sn6.json", "paper-ds2-nc2-sn6.inrv"}


@pytest.mark.parametrize("grid, msg", [
    (["--grid", "ds=3"], "ds"), (["--grid", "xx=1"], "unknown grid axis"), (["sn=a"], "not a positive"),
    (["--grid", "nc=0"], "positive"), (["--grid", "sn=4", "sn=5"], "twice"), (["--grid", "levels=3"], "unknown"),
])
def test_bad_grids_are_one_line_errors(tmp_path, grid, msg):
    src = phantom(tmp_path / "p.nii.gz")
    r = CliRunner().invoke(main, ["tune", str(src), *grid, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inrv: error:") and msg in lines[0], r.stderr
    assert not (tmp_path / "o").exists()                   # nothing was fitted or written


def test_other_usage_errors(tmp_path):
    src = phantom(tmp_path / "p.nii.gz")
    for args in (["--bpv", "0.5"], ["--alpha", "1,2"], ["--alpha", "x"], ["--apply-steps", "3"],
                 ["--preset", "nope"], ["--latent-curve", "-1"]):
        r = CliRunner().invoke(main, ["tune", str(src), *args, "-o", str(tmp_path / "o")])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
    r = CliRunner().invoke(main, ["tune", str(tmp_path / "missing.nii.gz")])
    assert r.exit_code == 2 and "no such file" in r.stderr
