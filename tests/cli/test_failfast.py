"""Careless use fails fast: checks that need no model run before torch is imported, and progress
shows without a terminal (issue 21)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "mni_patch64.nii.gz"
GOLDEN = ROOT / "tests" / "golden" / "v1" / "latent-tiny.inrv"

# runs the CLI in a fresh interpreter and reports (exit code, seconds of the command itself, torch imported?)
_RUNNER = r"""
import sys, time
from inrv.cli.main import main
t0 = time.perf_counter()
code = 0
try:
    main(sys.argv[1:], prog_name="inrv")
except SystemExit as e:
    code = e.code
print(f"RESULT {code} {time.perf_counter() - t0:.3f} {'torch' in sys.modules}", file=sys.stderr)
"""


def run_cli(*args: str, cwd: Path) -> tuple[int, float, bool, str]:
    p = subprocess.run([sys.executable, "-c", _RUNNER, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    last = [ln for ln in p.stderr.splitlines() if ln.startswith("RESULT ")][-1].split()
    message = "\n".join(ln for ln in p.stderr.splitlines() if not ln.startswith("RESULT "))
    return int(last[1]), float(last[2]), last[3] == "True", message


@pytest.mark.parametrize("output", ["no/such/folder/out.inrv", "afile.txt/out.inrv", "/proc/out.inrv"])
def test_encode_unwritable_output_fails_before_training(tmp_path, output):
    if output.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc")
    (tmp_path / "afile.txt").write_text("x")
    code, seconds, torch_loaded, msg = run_cli("encode", str(SAMPLE), "-o", output, "--preset", "latent-tiny",
                                                cwd=tmp_path)
    assert code == 2, msg
    assert seconds < 2.0, seconds
    assert not torch_loaded                     # no model was built, nothing trained
    assert output in msg and ".tmp" not in msg  # the user's path, never a temporary file
    assert msg.startswith("inrv: error: ") and len(msg.splitlines()) == 1


def test_encode_refuses_a_foreign_suffix(tmp_path):
    code, seconds, torch_loaded, msg = run_cli("encode", str(SAMPLE), "-o", "out.xyz", cwd=tmp_path)
    assert code == 2 and not torch_loaded and seconds < 2.0
    assert "out.xyz" in msg and ".inrv" in msg
    assert not (tmp_path / "out.xyz").exists()


def test_existing_output_and_bad_inputs_fail_before_torch(tmp_path):
    (tmp_path / "out.inrv").write_bytes(b"keep me")
    code, _, torch_loaded, msg = run_cli("encode", str(SAMPLE), "-o", "out.inrv", cwd=tmp_path)
    assert code == 2 and not torch_loaded and "out.inrv exists" in msg
    assert (tmp_path / "out.inrv").read_bytes() == b"keep me"
    (tmp_path / "notes.txt").write_text("not a volume")
    code, _, torch_loaded, msg = run_cli("encode", "notes.txt", "-o", "x.inrv", cwd=tmp_path)
    assert code == 2 and not torch_loaded and "notes.txt" in msg
    (tmp_path / "cut.inrv").write_bytes(GOLDEN.read_bytes()[:300])
    code, _, torch_loaded, msg = run_cli("decode", "cut.inrv", "-o", "cut.nii.gz", cwd=tmp_path)
    assert code == 2 and not torch_loaded and "cut.inrv" in msg and "truncated" in msg
    code, _, torch_loaded, msg = run_cli("decode", str(GOLDEN), "-o", "vol.xyz", cwd=tmp_path)
    assert code == 2 and not torch_loaded and "vol.xyz" in msg
    code, _, torch_loaded, msg = run_cli("decode", str(GOLDEN), "-o", "nope/vol.nii.gz", cwd=tmp_path)
    assert code == 2 and not torch_loaded and "nope/vol.nii.gz" in msg


def test_hostile_config_is_not_called_intact_by_info(tmp_path):
    """``inrv info`` validates the model configuration too (torch-free)."""
    sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
    import fuzzlib

    h, s = fuzzlib.load_golden()["latent-tiny"]
    (tmp_path / "bad.inrv").write_bytes(fuzzlib.apply_ops(h, s, [["set", ["c", "synth_layers"], 1 << 32]]))
    code, _, torch_loaded, msg = run_cli("info", "bad.inrv", cwd=tmp_path)
    assert code == 2 and not torch_loaded
    assert "bad.inrv" in msg and "synth_layers" in msg


# --------------------------------------------------------------------------- progress without a terminal

class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_line_progress_every_tenth_and_every_interval():
    from inrv.cli.output import LineProgress

    out = io.StringIO()
    p = LineProgress("scan.nii.gz", interval=30.0, stream=out)
    p._clock = clock = FakeClock()
    p._t0 = p._phase_t0 = p._last = 0.0
    for step in range(1, 1001):        # 1000 steps of 0.1 s: 100 s in all
        clock.t = step * 0.1
        p(step, 1000, {"loss": 0.5})
    lines = out.getvalue().splitlines()
    assert len(lines) == 10            # each 10 % (faster than every 30 s here)
    assert lines[0].startswith("inrv: scan.nii.gz: step 100/1000 (10 %), 10 s elapsed, ETA 1 min 29 s, loss 0.5")
    out.truncate(0), out.seek(0)
    q = LineProgress("big", interval=30.0, stream=out)
    q._clock = clock = FakeClock()
    q._t0 = q._phase_t0 = q._last = 0.0
    for step in range(1, 101):         # 100 steps of 4 s: 400 s, 10 % = 40 s > 30 s
        clock.t = step * 4.0
        q(step, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 13 and "ETA" in lines[-1]   # every 30 s (at 32, 64, ... 400 s)


def test_line_progress_of_a_time_budget_counts_seconds():
    from inrv.cli.output import LineProgress

    out = io.StringIO()
    p = LineProgress("scan.nii.gz", interval=30.0, stream=out)
    p._clock = clock = FakeClock()
    p._t0 = p._phase_t0 = p._last = 0.0
    clock.t = 17.7
    p(17.7, 162.49497, {"loss": 0.5})      # a budgeted encode reports seconds of its budget, as floats
    line = out.getvalue().strip()
    assert line.startswith("inrv: scan.nii.gz: 18 s of 162 s (11 %), 18 s elapsed, ETA"), line


def test_batch_lines_one_per_input():
    from inrv.cli.output import BatchLines

    out = io.StringIO()
    b = BatchLines(3, stream=out)
    b({"status": "ok", "input": "a.nii.gz", "output": "a.inrv", "seconds": 1.5})
    b({"status": "failed", "input": "b.nii.gz", "error": "not a volume"})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("inrv batch: 1/3 ok a.nii.gz -> a.inrv, 1.5 s;") and "ETA" in lines[0]
    assert lines[1].startswith("inrv batch: 2/3 failed b.nii.gz: not a volume")


def test_encode_without_a_terminal_prints_progress_lines(tmp_path, monkeypatch):
    """CliRunner's stderr is not a terminal: an encode prints plain progress lines, then its summary."""
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from inrv.cli.main import main

    rng = np.random.default_rng(0)
    vol = (rng.random((12, 12, 12)) * 100).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["encode", "v.nii.gz", "-o", "v.inrv", "--preset", "latent-tiny",
                                    "--epochs", "20"])
    assert res.exit_code == 0, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [ln for ln in err.splitlines() if ln.startswith("inrv: v.nii.gz") and " step " in ln]
    assert len(lines) >= 2 and "ETA" in lines[0] and lines[-1].split(": step ")[1].startswith("20/20"), err
