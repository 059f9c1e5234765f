"""``.inrv`` files: Encoded + volume facts <-> container header; validation; info; torch-free.

Uses a hand-built ``Encoded`` with fake sections: no model is fitted, torch is not needed.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inrv.codec.base import Encoded
from inrv.errors import FormatError, InputError, InrvError, LimitError, UnsupportedVersionError, UsageError
from inrv.formats.container import Limits, pack, read_header
from inrv.formats.inrvfile import (InrvFile, build_header, format_info_text, inrv_info, read_inrv, to_bytes,
                                   write_inrv)
from inrv.formats.volume import Geometry, Intensity, Volume

NIFTI_HEADER = struct.pack("<i", 348) + bytes(range(256)) + bytes(88)
SHAPE = (20, 24, 16)


def make_volume(shape=SHAPE, **source) -> Volume:
    geometry = Geometry(spacing=(0.68359375, 0.68359375, 1.25), origin=(-90.1, 126.00000000000001, -0.0),
                        direction=(0.9998, -0.0175, 0.0, 0.0175, 0.9998, -0.0, 0.0, 0.0, -1.0))
    intensity = Intensity(dtype="int16", slope=1.0, intercept=-1024.0, units="HU", min=-1024.0, max=3071.0)
    src = {"kind": "nifti1", "nifti_header": NIFTI_HEADER, "dicom": {"modality": "CT", "tags": {"a": [1, 2]}}}
    src.update(source)
    return Volume(np.zeros(shape, np.int16), geometry, intensity, src)


def make_encoded(shape=SHAPE, **kw) -> Encoded:
    args = dict(model="paper",
                config={"model": "paper", "ds": [2, 2, 2], "nc": 4, "lr": 1.5e-3, "quant": {"scales": [0.1, 0.2]}},
                sections={"weights": bytes(range(256)) * 8, "meta": b"\x01\x02"},
                shape=shape, value_range=(-1024.0, 3071.0),
                stats={"psnr": 41.25, "ssim": 0.97, "max_abs_err": 33.0, "lossless_check": math.inf,
                       "device": "cpu"})
    args.update(kw)
    return Encoded(**args)


def test_round_trip_file(tmp_path):
    vol, enc = make_volume(), make_encoded()
    path = tmp_path / "a.inrv"
    n = write_inrv(path, enc, vol)
    assert n == os.path.getsize(path)
    f = read_inrv(path)
    assert isinstance(f, InrvFile)
    assert f.encoded == enc                       # model, config (incl. "model"), sections, shape, range, stats
    assert f.shape == SHAPE and f.file_bytes == n and f.version == (1, 0)
    assert f.geometry == vol.geometry
    assert math.copysign(1.0, f.geometry.origin[2]) == -1.0          # -0.0 kept
    assert f.geometry.origin[1] == 126.00000000000001                 # float64 exact
    assert all(isinstance(v, float) for v in f.geometry.direction + f.geometry.spacing)
    assert f.intensity == vol.intensity and isinstance(f.intensity.min, float)
    assert f.source == vol.source
    assert read_inrv(path.read_bytes()).encoded == enc               # bytes accepted too


def test_voxels_are_not_stored():
    small = to_bytes(make_encoded(), make_volume())
    vol = make_volume()
    vol.data[:] = np.arange(vol.data.size, dtype=np.int16).reshape(vol.data.shape)
    assert to_bytes(make_encoded(), vol) == small


def test_header_is_compact():
    # the container's fixed part + our header, for a realistic NIfTI-sourced paper-model file
    buf = to_bytes(make_encoded(), make_volume())
    layout = read_header(buf)
    assert layout.header_bytes < 700 and layout.header_codec == "zstd+hd1"
    h = layout.header
    assert "model" not in h["c"]                              # the family is stored once, under "m"
    assert h["g"]["d"][2] == 0 and isinstance(h["g"]["d"][2], int)   # integral floats stored as ints
    assert isinstance(h["g"]["o"][2], float)                  # but -0.0 stays a float


def test_fitted_shape_kept_when_different():
    enc = make_encoded(shape=(10, 12, 8))
    f = read_inrv(to_bytes(enc, make_volume()))
    assert f.encoded.shape == (10, 12, 8) and f.shape == SHAPE
    assert "es" not in read_header(to_bytes(make_encoded(), make_volume())).header


def test_write_refuses_existing_without_force(tmp_path):
    path = tmp_path / "a.inrv"
    path.write_bytes(b"precious")
    with pytest.raises(UsageError):
        write_inrv(path, make_encoded(), make_volume())
    assert path.read_bytes() == b"precious"
    write_inrv(path, make_encoded(), make_volume(), force=True)
    assert read_inrv(path).shape == SHAPE
    assert [p.name for p in tmp_path.iterdir()] == ["a.inrv"]       # no temporary left behind


@pytest.mark.parametrize("kw, msg", [
    (dict(model="nope"), "unknown model"),
    (dict(shape=(4, 4)), "3 positive"),
    (dict(shape=(4, 0, 4)), "3 positive"),
    (dict(value_range=(2.0, 1.0)), "lo <= hi"),
    (dict(value_range=(0.0, math.nan)), "finite"),
    (dict(config={"model": "latent"}), "differs"),
    (dict(config={"x": object()}), "msgpack"),
    (dict(sections={"bad name": b""}), "section name"),
])
def test_write_refuses_bad_encoded(tmp_path, kw, msg):
    with pytest.raises(InrvError, match=msg):
        write_inrv(tmp_path / "a.inrv", make_encoded(**kw), make_volume())
    assert not (tmp_path / "a.inrv").exists()


# --------------------------------------------------------------------------- header validation

def _with(mutator, limits=None):
    h = build_header(make_encoded(), make_volume())
    mutator(h)
    return read_inrv(pack(h, make_encoded().sections), limits=limits)


def _set(path, value):
    def f(h):
        d = h
        for k in path[:-1]:
            d = d[k]
        if value is _DEL:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return f


_DEL = object()


@pytest.mark.parametrize("path, value, exc, msg", [
    (("s",), [20, 24], FormatError, "3 ints"),
    (("s",), [20, 24, 0], FormatError, "positive"),
    (("s",), [20, 24, True], FormatError, "3 ints"),
    (("s",), [20, 24, 16.0], FormatError, "3 ints"),
    (("s",), [65535, 65535, 65535], LimitError, "voxels"),
    (("es",), [1, 1, -1], FormatError, "positive"),
    (("g", "sp"), [1.0, math.nan, 1.0], FormatError, "finite"),
    (("g", "sp"), [1.0, -1.0, 1.0], FormatError, "positive"),
    (("g", "sp"), [1.0, "1", 1.0], FormatError, "number"),
    (("g", "o"), [0.0, math.inf, 0.0], FormatError, "finite"),
    (("g", "d"), [1.0] * 8, FormatError, "9 numbers"),
    (("g", "d"), _DEL, FormatError, "g.d is missing"),
    (("g",), [1], FormatError, "map"),
    (("i", "dt"), "complex64", FormatError, "i.dt"),
    (("i", "dt"), "object", FormatError, "i.dt"),
    (("i", "sl"), True, FormatError, "number"),
    (("i", "mn"), 5000, FormatError, "mn <= mx"),
    (("i", "u"), "", FormatError, "i.u"),
    (("i", "u"), "x" * 65, FormatError, "i.u"),
    (("r",), [0.0], FormatError, "2 numbers"),
    (("m",), "quantum", UnsupportedVersionError, "model family"),
    (("m",), 3, FormatError, "string"),
    (("e",), "", FormatError, "e must"),
    (("c",), [], FormatError, "c must be a map"),
    (("c", "model"), "latent", FormatError, "differs"),
    (("src",), _DEL, FormatError, "src is missing"),
    (("src", "kind"), _DEL, FormatError, "src.kind"),
    (("src", "nifti_header"), bytes(100), FormatError, "348 or 540"),
    (("src", "nifti_header"), "text", FormatError, "348 or 540"),
    (("src", "dicom"), [1], FormatError, "src.dicom"),
    (("st",), 5, FormatError, "st must be a map"),
    (("mu",), ["zfp-residual-v1"], UnsupportedVersionError, "zfp-residual-v1"),
    (("mu",), "x", FormatError, "mu must"),
])
def test_header_validation(path, value, exc, msg):
    with pytest.raises(exc, match=msg):
        _with(_set(path, value))


def test_unknown_keys_are_ignored_forward_compatible():
    f = _with(lambda h: h.update({"new": {"x": 1}, "mu": []}))
    assert f.header["new"] == {"x": 1} and f.shape == SHAPE


def test_max_voxels_limit():
    with pytest.raises(LimitError, match="voxels"):
        _with(lambda h: None, limits=Limits(max_voxels=SHAPE[0] * SHAPE[1] * SHAPE[2] - 1))


# --------------------------------------------------------------------------- opening files

def test_missing_and_folder_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        read_inrv(tmp_path / "nope.inrv")
    assert type(e.value) is InputError
    with pytest.raises(InputError, match="folder"):
        inrv_info(tmp_path)


@pytest.mark.parametrize("name, blob, hint", [
    ("scan.nii", struct.pack("<i", 348) + bytes(344) + b"n+1\x00" + bytes(100), "NIfTI"),
    ("scan.nii.gz", b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
    ("notes.txt", b"just some text\n", ""),
    ("empty.inrv", b"", "empty"),
])
def test_not_an_inrv_file(tmp_path, name, blob, hint):
    p = tmp_path / name
    p.write_bytes(blob)
    for fn in (read_inrv, inrv_info):
        with pytest.raises(FormatError, match="not an .inrv file") as e:
            fn(p)
        assert hint in str(e.value) and name in str(e.value)


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "cut.inrv"
    p.write_bytes(to_bytes(make_encoded(), make_volume())[:-3])
    with pytest.raises(FormatError, match="cut.inrv.*truncated"):
        read_inrv(p)


# --------------------------------------------------------------------------- info

def test_info_numbers_come_from_the_file(tmp_path):
    path = tmp_path / "a.inrv"
    n = write_inrv(path, make_encoded(), make_volume())
    d = inrv_info(path)
    voxels = SHAPE[0] * SHAPE[1] * SHAPE[2]
    assert d["file_bytes"] == n == os.path.getsize(path)
    assert d["voxels"] == voxels
    assert d["bpv"] == pytest.approx(8 * n / voxels)
    assert d["raw_bytes"] == voxels * 2 and d["ratio"] == pytest.approx(voxels * 2 / n)
    lay = d["layout"]
    assert lay["header_bytes"] + sum(s["stored_bytes"] for s in lay["sections"]) == n
    assert [s["name"] for s in lay["sections"]] == ["weights", "meta"]
    assert d["model"] == "paper" and d["config"]["nc"] == 4
    assert d["dtype"] == "int16" and d["shape"] == list(SHAPE)
    assert d["spacing"] == [0.68359375, 0.68359375, 1.25]
    assert d["intensity"]["units"] == "HU" and d["intensity"]["min"] == -1024.0
    assert d["metrics"]["psnr"] == 41.25 and d["metrics"]["lossless_check"] == "inf"
    assert d["source"]["nifti_header"] == "<348 bytes>"
    assert d["format_version"] == "1.0" and d["encoder_version"]
    json.dumps(d, allow_nan=False)                               # strict JSON
    text = format_info_text(d)
    for s in ("20 x 24 x 16", "int16", "HU", "PSNR 41.25", "bits/voxel", "weights", "paper", "a.inrv"):
        assert s in text


def test_info_does_not_decompress_sections():
    # a hand-built file (docs/format.md) whose zstd section has a right crc but undecodable data
    frame = b"\x28\xb5\x2f\xfd" + b"not really zstd"
    h = build_header(make_encoded(), make_volume())
    hb = msgpack.packb({**h, "_s": [["weights", 1, len(frame), zlib.crc32(frame), 100]]}, use_bin_type=True)
    fixed = struct.pack("<BBBI", 1, 0, 0, len(hb))
    buf = b"\x89INRV\r\n\x1a\n" + fixed + struct.pack("<I", zlib.crc32(fixed + hb)) + hb + frame
    d = inrv_info(buf)
    assert d["layout"]["sections"] == [{"name": "weights", "codec": "zstd", "stored_bytes": len(frame),
                                        "raw_bytes": 100}]
    assert d["file_bytes"] == len(buf)
    with pytest.raises(FormatError, match="zstd"):
        read_inrv(buf)


def test_info_text_identity_and_oblique():
    vol = make_volume()
    vol.geometry = Geometry()
    d = inrv_info(to_bytes(make_encoded(), vol))
    assert "direction identity" in format_info_text(d)


# --------------------------------------------------------------------------- robustness

GOOD = to_bytes(make_encoded(), make_volume())


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, len(GOOD) - 1), value=st.integers(0, 255), cut=st.integers(0, 40))
def test_mutated_files_fail_cleanly(pos, value, cut):
    buf = bytearray(GOOD)
    buf[pos] = value
    buf = bytes(buf[: len(buf) - cut])
    try:
        f = read_inrv(buf)
        info = inrv_info(buf)
    except InrvError:
        return
    assert buf == GOOD and f.shape == SHAPE and info["file_bytes"] == len(GOOD)


@settings(max_examples=100, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_float_fields_are_bit_exact(x):
    vol = make_volume()
    vol.geometry = Geometry(origin=(x, -x, 0.5))
    f = read_inrv(to_bytes(make_encoded(), vol))
    assert struct.pack("<d", f.geometry.origin[0]) == struct.pack("<d", x)
    assert struct.pack("<d", f.geometry.origin[1]) == struct.pack("<d", -x)


def test_info_is_torch_free(tmp_path):
    path = tmp_path / "a.inrv"
    path.write_bytes(GOOD)
    code = textwrap.dedent(f"""
        import sys
        from inrv.formats.inrvfile import inrv_info, format_info_text, read_inrv
        d = inrv_info({str(path)!r})
        format_info_text(d)
        read_inrv({str(path)!r})
        import inrv
        inrv.info({os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden", "v1", "paper-tiny.inrv")!r})  # + config check
        assert d["shape"] == {list(SHAPE)!r}
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_only_the_encode_time_figures_are_stored(tmp_path):
    """Training diagnostics stay in memory; the file keeps the figures `inrv info` shows (header bytes are rate)."""
    vol = make_volume()
    enc = make_encoded(stats={"psnr": 30.5, "ssim": 0.9, "bits_estimated": 123.4, "search": [{"bpv": 0.5}],
                              "final_loss": 0.01})
    write_inrv(tmp_path / "a.inrv", enc, vol)
    assert read_inrv(tmp_path / "a.inrv").encoded.stats == {"psnr": 30.5, "ssim": 0.9}
