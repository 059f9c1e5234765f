"""Whole volumes for the paper model: block partition, batched per-block SIRENs, streamed decode."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import PAPER_TINY

import inrv
from inrv.codec.paper import slabs as paper_slabs
from inrv.codec.config import make_config
from inrv.codec.paper import count_params, make_partition
from inrv.codec.siren import BlockSiren, Siren
from inrv.errors import FormatError

TINY = dict(PAPER_TINY, steps=6, lr_prefit_steps=5)


def _smooth(shape, seed=0):
    """A smooth phantom: a few low-frequency cosines (no edges, so seams are the only sharp features)."""
    g = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    for _ in range(4):
        k = rng.uniform(0.5, 2.0, 3)
        ph = rng.uniform(0, 2 * np.pi)
        vol += np.cos(2 * np.pi * (k[0] * g[0] + k[1] * g[1] + k[2] * g[2]) + ph).astype(np.float32)
    return 100 * vol


def test_batched_block_siren_equals_per_block_evaluation():
    torch.manual_seed(0)
    bs = BlockSiren(5, hidden=7, layers=3, omega0=30.0)
    coords = torch.rand(11, 3) * 2 - 1
    sel = torch.tensor([4, 0, 2])
    got = bs(sel, coords)
    for row, b in enumerate(sel.tolist()):
        one = Siren(7, 3, 30.0)
        with torch.no_grad():
            for i, lin in enumerate([*(layer.linear for layer in one.body), one.head]):
                lin.weight.copy_(getattr(bs, f"w{i}")[b])
                lin.bias.copy_(getattr(bs, f"b{i}")[b])
        torch.testing.assert_close(got[row], one(coords)[:, 0], atol=1e-5, rtol=1e-5)


def test_odd_size_blocks_roundtrip_and_streamed_decode(monkeypatch):
    x = _smooth((37, 41, 23))
    x[:, :, 12:] = 5.0                                   # a constant slab: its blocks get no SIREN
    enc = inrv.encode(x, "tiny", device="cpu", **dict(TINY, block=16))
    pc = enc.config["partition"]
    assert pc["bl"] == [7, 7, 6] and pc["grid"] == [3, 3, 2]   # low-res 19x21x12 in even blocks
    assert 0 < pc["active"] < 18                          # the constant half costs no weights
    assert enc.stats["params"] == count_params(make_config("tiny", **dict(TINY, block=16)), pc["active"])
    # one tensor per layer with a block axis: the header lists a handful of tensors, not one per block
    assert sum(k.startswith("bsiren.") for k in enc.config["quant"]["tensors"]) == 8
    y = inrv.decode(enc)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    # streamed decode (tiny slabs + tiny chunks) equals the whole-grid decode
    monkeypatch.setattr(paper_slabs, "RENDER_CHUNK", 999)
    small = dataclasses.replace(enc, config=dict(enc.config, max_lr_cells=19 * 21 * 3))
    np.testing.assert_allclose(inrv.decode(small), y, atol=1e-5 * float(np.ptp(x)))  # float32 rounding
    for shape in [(20, 30, 10), (74, 82, 46)]:
        assert inrv.decode(enc, shape=shape).shape == shape


def test_quantised_block_weights_round_trip_through_the_container(tmp_path):
    from inrv.codec.quant import dequantize_state, quantize_state

    x = _smooth((24, 24, 24))
    enc = inrv.encode(x, "tiny", device="cpu", **dict(TINY, block=8, weight_bits=6))
    state = dequantize_state(enc.sections["weights"], enc.config["quant"])
    w0 = state["bsiren.w0"]
    assert w0.shape == (enc.stats["active_blocks"], 8, 3)
    payload, meta = quantize_state(state, 6)        # re-quantising dequantised weights is lossless
    np.testing.assert_allclose(dequantize_state(payload, meta)["bsiren.w0"], w0, atol=1e-6)
    from inrv.formats.inrvfile import read_inrv, write_inrv
    from inrv.formats.volume import Volume

    p = tmp_path / "b.inrv"
    write_inrv(p, enc, Volume(x))
    enc2 = read_inrv(p).encoded
    assert enc2.sections["blockmap"] == enc.sections["blockmap"]
    np.testing.assert_allclose(inrv.decode(enc2), inrv.decode(enc), atol=1e-5)


def test_corrupt_block_map_is_a_format_error():
    enc = inrv.encode(_smooth((16, 16, 16)), "tiny", device="cpu", **dict(TINY, block=8))
    bad = [dataclasses.replace(enc, sections={"weights": enc.sections["weights"]}),
           dataclasses.replace(enc, sections=dict(enc.sections, blockmap=enc.sections["blockmap"][:-1])),
           dataclasses.replace(enc, config=dict(enc.config, partition={"bl": [4, 4, 4], "grid": [2, 2, 2]})),
           dataclasses.replace(enc, config=dict(enc.config, block=4))]
    for b in bad:
        with pytest.raises(FormatError):
            inrv.decode(b)


def test_thin_volume_and_one_voxel_axis():
    x = _smooth((128, 128, 3))
    enc = inrv.encode(x, "tiny", device="cpu", **dict(TINY, ds=(2, 2, 1)))
    assert enc.config["lr_shape"] == [64, 64, 3] and enc.config["partition"]["grid"] == [2, 2, 1]
    assert inrv.decode(enc).shape == x.shape
    y = _smooth((40, 40, 1))
    enc = inrv.encode(y, "tiny", device="cpu", **dict(TINY, ds=8, block=16))
    assert enc.config["lr_shape"] == [5, 5, 1] and inrv.decode(enc).shape == y.shape


def test_constant_and_background_volumes():
    enc = inrv.encode(np.full((40, 40, 40), 3, np.int16), "tiny", device="cpu", **dict(TINY, block=16))
    np.testing.assert_array_equal(inrv.decode(enc), np.full((40, 40, 40), 3.0, np.float32))
    x = np.zeros((48, 48, 48), np.float32)
    x[:16, :16, :16] = _smooth((16, 16, 16))
    enc = inrv.encode(x, "tiny", device="cpu", **dict(TINY, block=16))
    assert enc.stats["active_blocks"] == 1 and enc.stats["blocks"] == 27
    part = make_partition((x - x.min()) / (x.max() - x.min()), (24, 24, 24), (2, 2, 2), 16)
    assert part.active.sum() == 1


def _face_interior_psnr(x, y, hb):
    """PSNR (on the data's range) of voxels on block faces vs the rest."""
    face = np.zeros(x.shape, bool)
    for ax, h in enumerate(hb):
        idx = [slice(None)] * 3
        for k in range(h, x.shape[ax], h):
            for j in (k - 1, k):
                idx[ax] = j
                face[tuple(idx)] = True
    rng = float(x.max() - x.min())
    def p(m):
        return 10 * np.log10(rng ** 2 / float(np.mean((x[m] - y[m]) ** 2)))
    return p(face), p(~face)


def test_no_visible_seams_on_a_smooth_phantom():
    x = _smooth((32, 32, 32), seed=1)
    enc = inrv.encode(x, "tiny", device="cpu", block=16, steps=60, points_per_step=2048, nc=4, sn=16,
                      attn_width=8, attn_blocks=1, lr_prefit_steps=200)
    assert enc.stats["active_blocks"] == 8
    face, interior = _face_interior_psnr(x, inrv.decode(enc), (16, 16, 16))
    assert interior > 25, interior
    assert interior - face < 1.0, (face, interior)


_MEM_SCRIPT = textwrap.dedent("""
    import json, resource, numpy as np, torch
    import inrv
    kw = dict(steps=2, lr_prefit_steps=1, points_per_step=2048, nc=2, sn=8, attn_width=8, attn_blocks=1,
              mlp_width=8, res_blocks=1, max_lr_cells=1 << 14)
    def vol(shape):
        g = [np.linspace(0, 1, n, dtype=np.float32) for n in shape]
        return np.cos(6 * g[0])[:, None, None] * np.sin(5 * g[1])[None, :, None] + g[2][None, None, :]
    # warm-up on a small multi-block volume: torch's one-time allocations and the fixed-size work
    # buffers (query chunks, training windows) are then in place; what grows after is per-voxel
    inrv.encode(vol((48, 48, 24)), "tiny", device="cpu", **kw)
    x = vol((160, 160, 80)).astype(np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    enc = inrv.encode(x, "tiny", device="cpu", **kw)    # fits, then decodes once (streamed) for its PSNR
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kb": peak - base, "volume_kb": x.nbytes // 1024, "blocks": enc.stats["blocks"],
                      "psnr": enc.stats["psnr_quantised"]}))
""")


def test_large_volume_encodes_with_bounded_memory():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _MEM_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["blocks"] == 3 * 3 * 2 and r["psnr"] > 0
    # the fit keeps a few volume-sized arrays (float copy, normalised copy, FFT spectrum, the decoded
    # volume: ~9 measured) but no per-voxel activations (training or decoding the whole grid at once
    # would hold hundreds of floats per voxel). Bound: 16 volumes + 32 MiB.
    assert r["growth_kb"] < 16 * r["volume_kb"] + 32 * 1024, r
