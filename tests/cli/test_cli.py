"""The ``inrv`` command line: encode -> info -> decode on a tiny phantom, exit codes, stream hygiene.

Fast: 16^3 phantoms, the ``tiny`` preset with 5 steps. Each bad input must give exit code 2, one line
``inrv: error: ...`` on stderr, no traceback, and leave every file in the folder untouched.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import phantom

import inrv
from inrv.cli import options
from inrv.cli.main import default_decode_output, default_encode_output, main
from inrv.errors import FormatError, RunError

FAST = ["--preset", "tiny", "--epochs", "5", "--seed", "1"]
SHAPE = (16, 16, 16)
SPACING = (1.5, 1.0, 2.0)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def write_nifti(path: Path, data: np.ndarray, descrip: bytes = b"") -> Path:
    img = nib.Nifti1Image(data, np.diag([*SPACING, 1.0]))
    img.header["descrip"] = descrip
    nib.save(img, str(path))
    return path


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden temporaries too): bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("inrv: error: "), err
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """One real encode (preset tiny, 5 steps) shared by the tests: (folder, source .nii.gz, .inrv, JSON)."""
    d = tmp_path_factory.mktemp("enc")
    src = write_nifti(d / "phantom.nii.gz", phantom("int16", SHAPE), descrip=b"PATIENT JANE DOE")
    dst = d / "phantom.inrv"
    result = run("encode", src, "-o", dst, *FAST, "--json", "--progress")
    assert result.exit_code == 0, result.stderr
    return d, src, dst, result


# --------------------------------------------------------------------------- happy path

def test_encode_json_stdout_is_one_document_and_progress_goes_to_stderr(encoded):
    _, src, dst, result = encoded
    lines = result.stdout.splitlines()
    assert len(lines) == 1                                   # nothing else on stdout
    doc = json.loads(lines[0])
    assert doc["output"] == str(dst) and doc["input"] == str(src)
    assert doc["shape"] == list(SHAPE)
    assert doc["file_bytes"] == dst.stat().st_size
    assert doc["metrics"]["steps"] == 5 or doc["config"].get("fallback")   # lossless was smaller
    assert doc["seconds"] > 0
    assert "/5 [" in result.stderr                           # --progress forced the bar, on stderr


def test_encode_wrote_a_readable_file_and_left_the_input_alone(encoded):
    _, src, dst, _ = encoded
    assert dst.read_bytes()[:5] == b"\x89INRV"
    f = inrv.read(dst)
    assert tuple(f.encoded.shape) == SHAPE
    assert np.array_equal(np.asanyarray(nib.load(str(src)).dataobj), phantom("int16", SHAPE))


def test_info_json_fields_and_bpv_from_file_size(encoded):
    _, _, dst, _ = encoded
    result = run("info", "--json", dst)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    voxels = int(np.prod(SHAPE))
    assert doc["shape"] == list(SHAPE)
    assert doc["voxels"] == voxels
    assert doc["dtype"] == "int16"
    assert doc["file_bytes"] == dst.stat().st_size
    assert doc["bpv"] == pytest.approx(8 * dst.stat().st_size / voxels)
    assert doc["spacing"] == pytest.approx(list(SPACING))
    assert doc["model"] == "paper" or doc["config"].get("fallback") == "paper"   # lossless was smaller


def test_info_human_and_several_files(encoded):
    _, _, dst, _ = encoded
    result = run("info", dst)
    assert result.exit_code == 0, result.stderr
    assert dst.name in result.stdout and "16 x 16 x 16" in result.stdout
    result = run("info", "--json", dst, dst)
    assert result.exit_code == 0
    docs = [json.loads(line) for line in result.stdout.splitlines()]   # JSON Lines, one per file
    assert len(docs) == 2 and docs[0] == docs[1]


def test_info_bad_file_among_good_ones_sets_exit_code_but_describes_the_rest(encoded, tmp_path):
    _, _, dst, _ = encoded
    bad = tmp_path / "bad.inrv"
    bad.write_bytes(b"not at all")
    result = run("info", "--json", bad, dst)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["file_bytes"] == dst.stat().st_size
    assert result.stderr.startswith("inrv: error: ") and "Traceback" not in result.stderr


def test_decode_restores_shape_dtype_geometry(encoded, tmp_path):
    _, src, dst, _ = encoded
    out = tmp_path / "out.nii.gz"
    result = run("decode", dst, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "out.nii.gz" in result.stderr                      # the summary line
    img = nib.load(str(out))
    assert img.shape == SHAPE
    assert img.get_data_dtype() == np.int16
    assert np.allclose(img.header.get_zooms(), SPACING)
    assert np.allclose(img.affine, nib.load(str(src)).affine)


def test_decode_shape_option_resamples_the_grid(encoded, tmp_path):
    _, _, dst, _ = encoded
    out = tmp_path / "half.nii.gz"
    result = run("decode", dst, "-o", out, "--shape", "8,8,32", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["shape"] == [8, 8, 32]
    img = nib.load(str(out))
    assert img.shape == (8, 8, 32)
    # same field of view: spacing scales with the grid
    assert np.allclose(img.header.get_zooms(), (SPACING[0] * 2, SPACING[1] * 2, SPACING[2] / 2))


@pytest.mark.parametrize("shape", ["8,8", "0,8,8", "a,b,c", "8,8,8,8"])
def test_decode_bad_shape_is_a_usage_error(encoded, tmp_path, shape):
    _, _, dst, _ = encoded
    result = run("decode", dst, "-o", tmp_path / "x.nii.gz", "--shape", shape)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and not (tmp_path / "x.nii.gz").exists()


def test_private_names_are_dropped_unless_keep_private(encoded, tmp_path):
    d, src, dst, _ = encoded
    out = tmp_path / "plain.nii.gz"
    assert run("decode", dst, "-o", out).exit_code == 0
    assert b"JANE" not in bytes(nib.load(str(out)).header["descrip"])
    # default output name (IN with .inrv), --keep-private, -q: nothing printed at all
    work = tmp_path / "w"
    work.mkdir()
    src2 = work / "scan.nii.gz"
    src2.write_bytes(src.read_bytes())
    result = run("encode", src2, *FAST, "--keep-private", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert (work / "scan.inrv").is_file()
    out2 = tmp_path / "kept.nii.gz"
    assert run("decode", work / "scan.inrv", "-o", out2).exit_code == 0
    assert b"JANE" in bytes(nib.load(str(out2)).header["descrip"])


def test_latent_model_with_target_bpv(encoded, tmp_path):
    _, src, _, _ = encoded
    out = tmp_path / "lat.inrv"
    result = run("-v", "encode", src, "-o", out, "--preset", "latent-tiny", "--bpv", "4", "--epochs", "10",
                 "--json", "--progress")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == "latent"
    assert doc["config"]["target_bpv"] == 4.0 and doc["config"]["steps"] == 10
    assert doc["bpv"] == pytest.approx(8 * out.stat().st_size / np.prod(SHAPE))
    assert "model latent" in result.stderr                   # -v before the command name works


def test_decode_default_output_never_overwrites_the_original(encoded, tmp_path):
    _, src, dst, _ = encoded
    work = tmp_path / "w"
    work.mkdir()
    (work / "phantom.nii.gz").write_bytes(src.read_bytes())
    (work / "phantom.inrv").write_bytes(dst.read_bytes())
    before = snapshot(work)
    # default output = phantom.nii.gz, which exists: refused without -f
    msg = assert_one_line_error(run("decode", work / "phantom.inrv"))
    assert "--force" in msg
    assert snapshot(work) == before


def test_force_replaces_an_existing_output(encoded, tmp_path):
    _, _, dst, _ = encoded
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"old")
    assert run("decode", dst, "-o", out, "-f").exit_code == 0
    assert nib.load(str(out)).shape == SHAPE
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())   # not mkstemp's 0600


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_default_output_names():
    assert default_encode_output(Path("a/scan.nii.gz")) == Path("a/scan.inrv")
    assert default_encode_output(Path("a/scan.NRRD")) == Path("a/scan.inrv")
    assert default_encode_output(Path("a/series/")) == Path("a/series.inrv")
    assert default_decode_output(Path("a/scan.inrv"), "nifti1") == Path("a/scan.nii.gz")
    assert default_decode_output(Path("a/scan.inrv"), "mha") == Path("a/scan.mha")
    assert default_decode_output(Path("a/scan.inrv"), "dicom") == Path("a/scan")
    assert default_decode_output(Path("a/scan.inrv"), None) == Path("a/scan.nii.gz")


# --------------------------------------------------------------------------- bad inputs

def _bad_case(name: str, encoded, folder: Path) -> list[str]:
    """Create the bad input in ``folder``; return the command line that must fail with exit 2."""
    _, src, dst, _ = encoded
    good = dst.read_bytes()
    if name == "random-bytes":
        (folder / "r.inrv").write_bytes(np.random.default_rng(0).bytes(2000))
        return ["decode", folder / "r.inrv", "-o", folder / "r.nii.gz"]
    if name == "random-bytes-info":
        (folder / "r.inrv").write_bytes(np.random.default_rng(1).bytes(2000))
        return ["info", folder / "r.inrv"]
    if name == "truncated":
        (folder / "t.inrv").write_bytes(good[: len(good) // 2])
        return ["decode", folder / "t.inrv", "-o", folder / "t.nii.gz"]
    if name == "truncated-info":
        (folder / "t.inrv").write_bytes(good[:-1])
        return ["info", "--json", folder / "t.inrv"]
    if name == "bit-flipped-header":
        b = bytearray(good)
        b[24] ^= 0x10                                        # inside the header (after the 20-byte prefix)
        (folder / "f.inrv").write_bytes(bytes(b))
        return ["decode", folder / "f.inrv", "-o", folder / "f.nii.gz"]
    if name == "bit-flipped-magic":
        b = bytearray(good)
        b[3] ^= 0x01
        (folder / "m.inrv").write_bytes(bytes(b))
        return ["info", folder / "m.inrv"]
    if name == "text-file":
        (folder / "notes.nii.gz").write_text("hello, this is not a volume\n")
        return ["encode", folder / "notes.nii.gz", "-o", folder / "notes.inrv", *FAST]
    if name == "4d-nifti":
        write_nifti(folder / "four.nii.gz", np.zeros((8, 8, 8, 3), np.int16))
        return ["encode", folder / "four.nii.gz", "-o", folder / "four.inrv", *FAST]
    if name == "missing-encode":
        return ["encode", folder / "nothere.nii.gz", *FAST]
    if name == "missing-decode":
        return ["decode", folder / "nothere.inrv", "-o", folder / "x.nii.gz"]
    if name == "missing-info":
        return ["info", folder / "nothere.inrv"]
    if name == "exists-encode":
        (folder / "in.nii.gz").write_bytes(src.read_bytes())
        (folder / "in.inrv").write_bytes(b"precious")
        return ["encode", folder / "in.nii.gz", *FAST]
    if name == "exists-decode":
        (folder / "in.inrv").write_bytes(good)
        (folder / "out.nii.gz").write_bytes(b"precious")
        return ["decode", folder / "in.inrv", "-o", folder / "out.nii.gz"]
    if name == "output-is-input":
        (folder / "in.nii.gz").write_bytes(src.read_bytes())
        return ["encode", folder / "in.nii.gz", "-o", folder / "in.nii.gz", "-f", *FAST]
    if name == "output-folder-missing":
        (folder / "in.nii.gz").write_bytes(src.read_bytes())
        return ["encode", folder / "in.nii.gz", "-o", folder / "no" / "such" / "x.inrv", *FAST]
    if name == "inrv-as-encode-input":
        (folder / "in.inrv").write_bytes(good)
        return ["encode", folder / "in.inrv", "-o", folder / "again.inrv", *FAST]
    raise AssertionError(name)


BAD_CASES = ["random-bytes", "random-bytes-info", "truncated", "truncated-info", "bit-flipped-header",
             "bit-flipped-magic", "text-file", "4d-nifti", "missing-encode", "missing-decode", "missing-info",
             "exists-encode", "exists-decode", "output-is-input", "output-folder-missing", "inrv-as-encode-input"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exit_2_one_line_files_untouched(encoded, tmp_path, case):
    args = _bad_case(case, encoded, tmp_path)
    before = snapshot(tmp_path)
    result = run(*args)
    assert_one_line_error(result, 2)
    assert snapshot(tmp_path) == before            # nothing modified, nothing created, no temporaries left


def test_device_cuda_without_gpu_is_exit_2(encoded, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _, src, dst, _ = encoded
    before = snapshot(tmp_path)
    msg = assert_one_line_error(run("encode", src, "-o", tmp_path / "x.inrv", *FAST, "--device", "cuda"))
    assert "CUDA" in msg
    msg = assert_one_line_error(run("decode", dst, "-o", tmp_path / "x.nii.gz", "--device", "cuda"))
    assert "CUDA" in msg
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("opts, preset", [
    ({}, "balanced"),                                       # the project default: the latent family
    ({"ds": "4"}, "paper"),                                 # paper-only options choose the paper model
    ({"sn": 50, "epochs": 3}, "paper"),
    ({"bpv": 0.5}, "balanced"),                             # latent-only options choose the latent model
    ({"model": "paper"}, "paper"),
    ({"preset": "tiny", "ds": "2"}, "tiny"),
])
def test_family_only_options_choose_the_family(opts, preset):
    from inrv.cli.options import build_config, resolve_preset, _model_of

    assert resolve_preset(opts.get("preset"), _model_of(opts)) == preset
    assert build_config(**opts).model == inrv.PRESETS[preset].model


@pytest.mark.parametrize("extra, words", [
    (["--preset", "tiny", "--bpv", "1"], "--bpv"),          # latent-only option with a paper preset
    (["--model", "latent", "--sn", "8"], "--sn"),           # paper-only option with the latent model
    (["--preset", "latent-tiny", "--bpv", "1", "--psnr", "30"], "not both"),
    (["--model", "latent", "--preset", "tiny"], "--model"),
    (["--ds", "3"], "downsampling"),
])
def test_options_that_do_not_apply_are_usage_errors(encoded, tmp_path, extra, words):
    _, src, _, _ = encoded
    result = run("encode", src, "-o", tmp_path / "x.inrv", "--epochs", "1", *extra)
    msg = assert_one_line_error(result, 2)
    assert words in msg
    assert not (tmp_path / "x.inrv").exists()


def test_click_usage_errors_are_exit_2():
    assert run("encode").exit_code == 2                       # missing argument
    assert run("encode", "x.nii", "--preset", "nope").exit_code == 2
    assert run("frobnicate").exit_code == 2


# --------------------------------------------------------------------------- failures of the run

@pytest.mark.parametrize("exc, code, words", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (MemoryError(), 1, "out of memory"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text"), 1, "out of memory"),
    (OSError(errno.ENOSPC, "No space left on device"), 1, "disk full"),
    (RunError("cannot write x.inrv: No space left on device"), 1, "cannot write"),
    (ZeroDivisionError("division by zero"), 1, "unexpected ZeroDivisionError"),
    (FormatError("x.inrv: bad"), 2, "x.inrv: bad"),
])
def test_failures_map_to_exit_codes_without_traceback(encoded, tmp_path, monkeypatch, exc, code, words):
    _, src, _, _ = encoded

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(inrv, "compress", boom)
    result = run("encode", src, "-o", tmp_path / "x.inrv", *FAST)
    assert result.exit_code == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("inrv: ")
    assert not (tmp_path / "x.inrv").exists()


def test_verbose_prints_the_traceback(encoded, tmp_path, monkeypatch):
    _, src, _, _ = encoded

    def boom(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(inrv, "compress", boom)
    result = run("encode", src, "-o", tmp_path / "x.inrv", *FAST, "-v")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("inrv: error: ")


def test_classify_error_looks_through_the_cause_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "out.inrv")
        except OSError as e:
            raise RunError("cannot write out.inrv") from e
    except RunError as wrapped:
        code, msg = options.classify_error(wrapped)
    assert code == 1 and msg.startswith("disk full")
    assert options.classify_error(PermissionError(errno.EACCES, "Permission denied", "x"))[0] == 2


def test_progress_bar_restarts_when_the_total_changes(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    with options.ProgressBar(desc="fit", enabled=True, mininterval=0) as bar:
        for s in range(1, 11):
            bar(s, 10, {"loss": 0.5})
        bar(1, 4, {})
        bar(4, 4, {})
    text = buf.getvalue()
    assert "10/10" in text and "4/4" in text and "loss=0.5" in text
    buf2 = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf2)
    with options.ProgressBar(enabled=None) as bar:         # auto: StringIO is not a terminal -> off
        bar(1, 10, {})
    assert buf2.getvalue() == ""


# --------------------------------------------------------------------------- real processes

def _inrv_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("inrv")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "inrv.cli.main"]


def test_version_subprocess():
    p = subprocess.run([*_inrv_cmd(), "--version"], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0
    assert p.stdout.startswith(f"inrv {inrv.__version__}") and p.stderr == ""


def test_info_json_subprocess_is_clean_and_does_not_import_torch(encoded):
    _, _, dst, _ = encoded
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "inrv.cli.main", "info", "--json", str(dst)],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["file_bytes"] == dst.stat().st_size
    modules = [ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")]
    assert "inrv.formats.inrvfile" in modules
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]
    assert all(ln.startswith("import time:") for ln in p.stderr.splitlines())   # nothing else on stderr
    # a corrupt file: exit 2, one line, stdout empty
    bad = dst.with_name("corrupt.inrv")
    try:
        bad.write_bytes(dst.read_bytes()[:40])
        p = subprocess.run([*_inrv_cmd(), "info", "--json", str(bad)], capture_output=True, text=True, env=ENV,
                           timeout=60)
    finally:
        bad.unlink()
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("inrv: error: ") and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_exits_130_and_leaves_no_output(encoded, tmp_path):
    _, src, _, _ = encoded
    out = tmp_path / "x.inrv"
    p = subprocess.Popen([*_inrv_cmd(), "encode", str(src), "-o", str(out), "--preset", "tiny",
                          "--epochs", "100000", "-v"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=ENV)
    try:
        first = p.stderr.readline()          # -v: printed after start-up, right before training
        assert first.startswith("inrv: "), first
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "inrv: interrupted" in err
    assert list(tmp_path.iterdir()) == []    # no output, no temporary file


def test_json_output_is_strict():
    from inrv.cli.output import dumps, encode_summary_line

    doc = json.loads(dumps({"a": np.float32(1.5), "b": float("inf"), "c": np.arange(3), "d": b"xyz",
                            "e": Path("p")}))
    # the one policy (formats/jsonsafe.py), as in inrv info: non-finite numbers as strings, bytes by length
    assert doc == {"a": 1.5, "b": "inf", "c": [0, 1, 2], "d": "<3 bytes>", "e": "p"}
    summary = inrv.Summary(path="a.inrv", model="latent", shape=(16, 16, 32), dtype="uint8", file_bytes=2048,
                           raw_bytes=8192, ratio=4.0, bpv=0.25, psnr=float("inf"), ssim=0.9, seconds=3.0)
    line = encode_summary_line("a.nii", "a.inrv", summary)
    assert line == "a.nii -> a.inrv: 2.0 KiB, 0.250 bpv, PSNR inf dB, SSIM 0.9000, 3.0 s"
