"""Hostile ``.inrv`` files: seeded structure-aware fuzzing of the reader and both decoders.

Every case (a golden file with rewritten header fields or sections, checksums recomputed; see
``fuzzlib.py``) must end as ``ok`` or an ``InrvError`` subclass: no other exception (a library
``ValueError``, a Rust ``PanicException``, a ``MemoryError``), no case slower than 10 s and none that
grows the process by more than 256 MiB. The long run is ``python tests/fuzz/fuzz.py`` (docs/format.md).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzlib  # noqa: E402

pytest.importorskip("torch")

CASES = int(os.environ.get("INRV_FUZZ_CASES", "2000"))
SEED = 20261203
MAX_SECONDS = 10.0
MAX_GROWTH = 256 << 20
@pytest.fixture(scope="module")
def golden():
    g = fuzzlib.load_golden()
    if not g:
        pytest.skip("no golden files")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for h, s in g.values():      # warm up each decoder: first-call allocations are not a case's growth
        assert fuzzlib.run_case(fuzzlib.apply_ops(h, s, [])) == "ok"
    yield g
    torch.set_num_threads(threads)


def _check(buf: bytes, what: str) -> str:
    before, peak0 = fuzzlib.rss_bytes(), fuzzlib.peak_bytes()
    t0 = time.perf_counter()
    try:
        outcome = fuzzlib.run_case(buf)
    except BaseException as e:  # noqa: BLE001 - a PanicException is a BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        pytest.fail(f"{what}: {type(e).__name__} escaped: {str(e)[:300]}")
    dt = time.perf_counter() - t0
    peak1 = fuzzlib.peak_bytes()
    assert dt < MAX_SECONDS, f"{what}: {dt:.1f} s"
    assert peak1 <= peak0 or peak1 - before < MAX_GROWTH, f"{what}: grew by {(peak1 - before) >> 20} MiB"
    return outcome


def test_kept_regressions(golden):
    """Every case that ever crashed, hung or over-allocated is an InrvError now."""
    cases = fuzzlib.load_regressions()
    assert cases
    for c in cases:
        h, s = golden[c["golden"]]
        outcome = _check(fuzzlib.apply_ops(h, s, c["ops"]), c["why"])
        assert outcome != "ok", f"{c['why']}: decoded as if intact"


def test_fuzz_seeded(golden):
    outcomes: dict[str, int] = {}
    for i in range(CASES):
        name, ops = fuzzlib.case_ops(SEED, i, golden)
        h, s = golden[name]
        outcome = _check(fuzzlib.apply_ops(h, s, ops), f"case {i} ({name}, ops {ops})")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # the mutations are not all refused at the door: some decode, most are caught by a validator
    assert outcomes.get("ok", 0) > CASES // 20 and outcomes.get("FormatError", 0) > CASES // 4, outcomes


def test_unmodified_files_roundtrip_through_build(golden):
    """The harness itself: rebuilding a golden file with no operation gives a file that decodes."""
    for name, (h, s) in golden.items():
        assert fuzzlib.run_case(fuzzlib.apply_ops(h, s, [])) == "ok", name


def test_header_of_millions_of_empty_maps_is_refused_fast():
    """A 2 KB file whose header unpacks to 16 M empty maps: refused in well under a second."""
    import struct
    import zlib

    import msgpack
    import zstandard

    from inrv.errors import LimitError
    from inrv.formats import container

    n, k = 65536, 255
    raw = (b"\x82" + msgpack.packb("_s") + b"\x90" + msgpack.packb("x") + b"\xdc" + struct.pack(">H", k)
           + (b"\xdd" + struct.pack(">I", n) + b"\x80" * n) * k)
    z = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(raw)
    pre = struct.pack("<BBBI", 1, 0, 1, len(z))
    buf = container.MAGIC + pre + struct.pack("<I", zlib.crc32(z, zlib.crc32(pre))) + z
    assert len(buf) < 4096
    before, peak0 = fuzzlib.rss_bytes(), fuzzlib.peak_bytes()
    t0 = time.perf_counter()
    with pytest.raises(LimitError, match="values"):
        container.read_header(buf)
    assert time.perf_counter() - t0 < 5.0
    assert fuzzlib.peak_bytes() <= peak0 or fuzzlib.peak_bytes() - before < MAX_GROWTH
    one = b"\x82" + msgpack.packb("_s") + b"\x90" + msgpack.packb("x") + b"\xdd" + struct.pack(">I", 1 << 24)
    with pytest.raises(LimitError, match="longer than"):
        container._unpack_msgpack(one + b"\x80" * 100)


def test_schema_matches_the_decoders():
    """The torch-free schema knows the latent decoder's payload version and tensor layout."""
    from inrv.codec import latent, schema
    from inrv.codec.config import LatentConfig, config_to_dict

    assert schema.LATENT_VERSION == latent.FORMAT_VERSION
    for kw in [{}, {"synth_layers": 0}, {"synth_convs": 2, "synth_kernel": 5}, {"ctx_passes": 2, "ctx_layers": 1},
               {"ctx_coarse": 27, "ctx_layers": 4, "channels": 3, "levels": 5}]:
        cfg = LatentConfig(ctx_width=16, **kw)
        n = len(latent.level_shapes((20, 30, 40), cfg.levels))
        mine = schema.latent_tensor_shapes(schema.latent_defaults(config_to_dict(cfg)), n)
        assert [(k, tuple(v)) for k, v in mine] == list(latent._arch_shapes(n, cfg).items())
    from inrv.codec.paper.partition import block_lr_size

    for lr, ds, block in [((8, 8, 8), (2, 2, 2), 8), ((99, 117, 95), (2, 2, 1), 64), ((5, 7, 3), (4, 4, 8), 0),
                          ((256, 256, 128), (2, 2, 2), 16)]:
        assert schema.paper_block_lr_size(lr, ds, block) == tuple(block_lr_size(lr, ds, block))


def test_every_preset_passes_the_schema():
    """No preset writes a configuration the reader's limits would refuse."""
    from inrv.codec import schema
    from inrv.codec.config import PRESETS, config_to_dict

    for name, cfg in PRESETS.items():
        d = config_to_dict(cfg)
        if cfg.model == "latent":
            d.update({"ctx_width": d["ctx_width"] or 24, "sym_range": [-3, 4], "v": 2,
                      "wq": None, "wmax": 100})
            d.pop("bg_block")
            n = len(schema.latent_level_shapes((64, 64, 64), d["levels"]))
            d["wq"] = [[0, 0]] * len(schema.latent_tensor_shapes(schema.latent_defaults(d), n))
        elif cfg.model == "nearlossless":       # what fit adds: payload version and the coded range
            d.update({"v": 1, "E": int(d["max_error"]), "lo": 0, "hi": 255, "root": 0, "mode": 0})
        else:
            d.update({"lr_shape": [32, 32, 32], "quant": {"scheme": "affine-v1", "tensors": {}}})
        schema.validate_config(cfg.model, d, (64, 64, 64))


def test_a_volume_that_cannot_fit_is_refused_before_decoding(golden, tmp_path, monkeypatch):
    """A file declaring more voxels than the machine can hold: a LimitError naming the file, not a
    MemoryError after the networks are built."""
    import inrv
    from inrv.codec import schema
    from inrv.errors import LimitError

    h, s = golden["paper-tiny"]
    path = tmp_path / "big.inrv"
    path.write_bytes(fuzzlib.apply_ops(h, s, [["set", ["s"], [1024, 1024, 1024]],
                                               ["set", ["c", "lr_shape"], [512, 512, 512]]]))
    assert inrv.info(path).details["voxels"] == 1 << 30          # a valid declaration ...
    monkeypatch.setattr(schema, "available_memory", lambda: 1 << 30)
    with pytest.raises(LimitError, match="big.inrv declares a 1024x1024x1024 volume"):
        inrv.decompress(path, tmp_path / "out.nii.gz")   # ... that this machine cannot decode
    assert not (tmp_path / "out.nii.gz").exists()
