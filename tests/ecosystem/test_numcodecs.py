"""inrv.numcodecs.Inrv: a numcodecs codec (round trip, config, registry) and a real zarr 3 array."""

from __future__ import annotations

import json

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")

from inrv.codec.metrics import psnr  # noqa: E402
from inrv.errors import InputError, UsageError  # noqa: E402
from inrv.numcodecs import Inrv  # noqa: E402

# a few training steps: the tests check plumbing (shapes, dtypes, bytes, metadata), not quality
FAST = {"preset": "latent-tiny", "steps": 8, "options": {"polish_steps": 1}}


def phantom(shape=(16, 14, 12), dtype=np.int16) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    ball = (i**2 + j**2 + k**2 < 0.6).astype(np.float64)
    return (200 * ball + 60 * np.sin(3 * i) * np.cos(2 * j) + 100).astype(dtype)


def test_round_trip_shape_dtype_and_bytes_are_an_inrv_file():
    import inrv

    a = phantom()
    codec = Inrv(**FAST)
    buf = codec.encode(a)
    assert buf[:5] == b"\x89INRV"
    info = inrv.info(buf)
    assert info.shape == a.shape and info.dtype == "int16"
    back = codec.decode(buf)
    assert back.shape == a.shape and back.dtype == a.dtype
    assert psnr(a, back) > 15  # a rough fit after 8 steps, but the phantom, not noise
    out = np.zeros_like(a)
    assert codec.decode(buf, out=out) is out or np.array_equal(out, back)
    np.testing.assert_array_equal(out, back)


def test_get_config_from_config_and_registry():
    codec = Inrv(preset="fast", psnr=42.0, seed=3, device="cpu")
    cfg = codec.get_config()
    assert cfg == {"id": "inrv", "preset": "fast", "psnr": 42.0, "seed": 3}   # device is not stored
    json.dumps(cfg)
    again = Inrv.from_config(cfg)
    assert again == codec and again.config() == codec.config()
    assert again.config().target_psnr == 42.0 and again.config().seed == 3
    found = numcodecs.get_codec(dict(cfg))          # through the numcodecs.codecs entry point
    assert isinstance(found, Inrv) and found.get_config() == cfg


def test_bad_options_and_chunks_fail_early():
    with pytest.raises(UsageError):
        Inrv(bpv=0.5, psnr=40)
    with pytest.raises(UsageError):
        Inrv(preset="nope")
    with pytest.raises(UsageError):
        Inrv(preset="paper", bpv=0.5)            # a rate target is a latent-model option
    with pytest.raises(InputError):
        Inrv(**FAST).encode(np.zeros((4, 4), np.int16))
    with pytest.raises(InputError):
        Inrv(**FAST).encode(np.zeros((4, 4, 4), np.complex64))


def test_zarr3_array_written_and_read_back(tmp_path):
    zarr = pytest.importorskip("zarr")
    zan = pytest.importorskip("zarr_any_numcodecs")
    import inrv

    a = phantom((16, 14, 12))
    path = tmp_path / "vol.zarr"
    z = zarr.create_array(str(path), shape=a.shape, chunks=(8, 14, 12), dtype=a.dtype, fill_value=0,
                          serializer=zan.AnyNumcodecsArrayBytesCodec(Inrv(**FAST)), compressors=None)
    z[:] = a
    meta = json.loads((path / "zarr.json").read_text())
    serializer = meta["codecs"][0]
    assert serializer["name"] == "any-numcodecs.array-bytes"
    assert serializer["configuration"]["id"] == "inrv"
    chunk_files = sorted(p for p in (path / "c").rglob("*") if p.is_file())
    assert len(chunk_files) == 2                     # 16 / 8 chunks along the first axis
    for p in chunk_files:                            # every stored chunk is a complete .inrv file
        assert inrv.info(p.read_bytes()).shape == (8, 14, 12)
    stored = sum(p.stat().st_size for p in chunk_files)
    assert stored < a.nbytes / 2

    r = zarr.open_array(str(path), mode="r")        # a fresh array: codec found from the metadata
    back = r[:]
    assert back.shape == a.shape and back.dtype == a.dtype
    assert psnr(a, back) > 15
    np.testing.assert_array_equal(r[8:, 3:9, :], back[8:, 3:9, :])   # a partial read decodes one chunk


def test_max_error_is_a_guaranteed_bound():
    from inrv import PRESETS

    if not any(getattr(p, "model", None) == "nearlossless" for p in PRESETS.values()):
        pytest.skip("this inrv has no nearlossless family")
    a = (np.random.default_rng(0).normal(size=(16, 14, 12)) * 100).astype(np.int16)
    for bound in (0, 2):
        codec = Inrv(max_error=bound)
        back = numcodecs.get_codec(codec.get_config()).decode(codec.encode(a))
        assert back.dtype == a.dtype and int(np.abs(back.astype(np.int64) - a).max()) <= bound
    assert np.array_equal(Inrv(max_error=0).decode(Inrv(max_error=0).encode(a)), a)
    with pytest.raises(UsageError):
        Inrv(max_error=1, bpv=0.5)


def test_chunks_follow_compress_rules_never_larger_than_lossless():
    """A label-map chunk costs what the lossless coder costs, as `inrv encode` would store it."""
    import inrv

    labels = np.zeros((16, 14, 12), dtype=np.uint8)
    labels[3:9, 2:10, 4:8] = 3
    buf = Inrv(**FAST).encode(labels)
    f = inrv.read(buf)
    assert f.encoded.model == "nearlossless" and f.encoded.config["fallback"] == "latent"
    assert np.array_equal(Inrv(**FAST).decode(buf), labels)
