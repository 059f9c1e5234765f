"""The ``latent`` model family: exact latent coding, honest rate, lambda search, and quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ellipsoid_phantom as _phantom

from inrv.codec.base import get_model
from inrv.codec.config import make_config
from inrv.codec.latent import LatentModel, _arch_shapes, _decode_nets, code_latents, level_shapes
from inrv.codec.config import config_from_dict
from inrv.codec.metrics import psnr
from inrv.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "mni_patch64.nii.gz"


def _mni_crop(n=32) -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    a = np.asarray(nib.load(str(SAMPLE)).dataobj)
    o = (a.shape[0] - n) // 2
    return np.ascontiguousarray(a[o:o + n, o:o + n, o:o + n])


def _decoded_ints(enc):
    cfg = config_from_dict(enc.config)
    vshape = tuple(enc.shape) + (1,) * (3 - len(enc.shape))
    shapes = level_shapes(vshape, cfg.levels)
    w = _decode_nets(enc.sections["synthesis"], enc.config, cfg, len(shapes))
    lo, hi = enc.config["sym_range"]
    return code_latents(None, w, shapes, cfg.channels, data=enc.sections["latents"], lo=lo, hi=hi,
                        passes=cfg.ctx_passes), w, shapes, cfg


@pytest.fixture(scope="module", params=[2, 8], ids=["checkerboard", "8-pass"])
def tiny_fit(request):
    vol = _phantom()
    calls = []
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=30, ctx_passes=request.param), device="cpu",
                            progress=lambda s, t, i: calls.append((s, t, i)))
    assert enc.config["ctx_passes"] == request.param
    return vol, enc, calls


def test_registry_and_encoded_shape(tiny_fit):
    vol, enc, calls = tiny_fit
    assert isinstance(get_model("latent"), LatentModel)
    assert enc.model == "latent" and tuple(enc.shape) == vol.shape
    # the phantom's corners are background: with the default bg_block it gets a mask section
    assert set(enc.sections) == {"latents", "synthesis", "background"}
    assert enc.value_range == (float(vol.min()), float(vol.max()))
    assert calls and calls[-1][0] == calls[-1][1] and "loss" in calls[-1][2]
    import msgpack
    msgpack.packb(enc.config)  # msgpack-able


def test_latents_round_trip_bit_exact(tiny_fit):
    """Decoding the range-coded section and re-encoding it gives the same bytes: the parameters
    the coder sees are computed identically on both sides."""
    _, enc, _ = tiny_fit
    ints, w, shapes, cfg = _decoded_ints(enc)
    assert [i.shape[1:] for i in ints] == shapes
    assert any(np.any(i != 0) for i in ints)
    lo, hi = enc.config["sym_range"]
    again = code_latents(ints, w, shapes, cfg.channels, lo=lo, hi=hi, passes=cfg.ctx_passes)
    assert again == enc.sections["latents"]
    ints2, *_ = _decoded_ints(enc)
    for a, b in zip(ints, ints2):
        np.testing.assert_array_equal(a, b)


def test_reported_rate_equals_section_bytes(tiny_fit):
    vol, enc, _ = tiny_fit
    st = enc.stats
    assert st["latent_bytes"] == len(enc.sections["latents"])
    assert st["bits_actual"] == 8 * len(enc.sections["latents"])
    assert st["synthesis_bytes"] == len(enc.sections["synthesis"])
    assert st["bpv_sections"] == pytest.approx(8 * enc.payload_bytes / vol.size)
    # the differentiable estimate used in training tracks the coder
    assert abs(st["bits_estimated"] - st["bits_actual"]) <= 0.1 * st["bits_actual"] + 256


def test_render_matches_reported_psnr_and_is_deterministic(tiny_fit):
    vol, enc, _ = tiny_fit
    a = LatentModel().render(enc, device="cpu")
    b = LatentModel().render(enc)
    assert a.dtype == np.float32 and a.shape == vol.shape
    np.testing.assert_array_equal(a, b)
    p = psnr(vol, np.clip(np.rint(a), 0, 255))
    assert p == pytest.approx(enc.stats["psnr"], abs=1e-6)
    with pytest.raises(InputError, match="renders only its fitted shape"):
        LatentModel().render(enc, shape=(5, 5, 5))


@pytest.mark.slow
def test_thin_and_constant_volumes():
    cfg = make_config("latent-tiny", steps=20, polish_steps=0)
    thin = _phantom((30, 26, 2))
    enc = LatentModel().fit(thin, cfg, device="cpu")
    assert LatentModel().render(enc).shape == thin.shape
    flat = np.full((16, 16, 8), 7, np.int16)
    enc = LatentModel().fit(flat, cfg, device="cpu")
    out = LatentModel().render(enc)
    assert np.abs(out - 7).max() < 0.5
    assert len(enc.sections["latents"]) <= 16   # background costs next to nothing
    with pytest.raises(InputError, match="2D or 3D array"):
        LatentModel().fit(np.zeros((2, 2, 2, 2)), cfg)


@pytest.mark.slow
def test_target_bpv_lands_within_ten_percent():
    vol = _phantom((32, 28, 24), seed=3)
    target = 1.0
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=25, target_bpv=target, search_iters=6),
                            device="cpu")
    bpv = enc.stats["bpv_total"]
    assert abs(bpv - target) / target <= 0.10, enc.stats.get("search")
    assert bpv >= enc.stats["bpv_sections"]


def _kspace_trilinear(vol: np.ndarray) -> np.ndarray:
    """Baseline: crop the centred spectrum by 2 per axis, inverse FFT, trilinear back up."""
    x = vol.astype(np.float64)
    f = np.fft.fftshift(np.fft.fftn(x))
    n = np.array(x.shape)
    m = n // 2
    s = tuple(slice((a - b) // 2, (a - b) // 2 + b) for a, b in zip(n, m))
    low = np.real(np.fft.ifftn(np.fft.ifftshift(f[s]))) * (np.prod(m) / np.prod(n))
    t = torch.as_tensor(low)[None, None]
    up = torch.nn.functional.interpolate(t, size=tuple(int(v) for v in n), mode="trilinear", align_corners=False)
    return up[0, 0].numpy()


@pytest.mark.slow
def test_tiny_fit_beats_kspace_trilinear_baseline():
    """On a real MRI crop, a 40-step fit beats the k-space-downsampled volume upsampled
    trilinearly, while spending fewer bits than that low-res grid stored raw (1/8 of the voxels
    at 8 bits = 1 bpv)."""
    vol = _mni_crop(32)
    base = psnr(vol, np.clip(np.rint(_kspace_trilinear(vol)), 0, 255))
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=40, lmbda=1e-3), device="cpu")
    assert enc.stats["psnr"] > base + 1.0, (enc.stats["psnr"], base)
    assert enc.stats["bpv_total"] < 1.0


@pytest.mark.slow
def test_target_psnr_search_gets_close():
    vol = _phantom((32, 28, 24), seed=3)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=25, target_psnr=30.0, search_iters=6),
                            device="cpu")
    assert abs(enc.stats["psnr"] - 30.0) <= 1.0, enc.stats.get("search")
    assert len(enc.stats["search"]) >= 2


def test_pass_orders_are_causal_and_cover_every_neighbour_pair():
    """Every latent of a level is coded in exactly one pass; for any two neighbours exactly one
    sees the other (it is coded earlier); the first pass sees no neighbour of its level."""
    from inrv.codec.latent import _OFFSETS_26, avail_table, pass_map

    av = avail_table()
    assert not av[0].any() and av[-1].all()
    pm = pass_map((6, 5, 4), 8)
    assert sorted(np.unique(pm)) == list(range(8))
    for i, j, k in np.ndindex(*pm.shape):
        for o, (a, b, c) in enumerate(_OFFSETS_26):
            n = (i + a, j + b, k + c)
            if not all(0 <= v < s for v, s in zip(n, pm.shape)):
                continue
            back = _OFFSETS_26.index((-a, -b, -c))
            assert av[pm[i, j, k], o] == (pm[n] < pm[i, j, k])
            assert av[pm[i, j, k], o] != av[pm[n], back]
    cb = pass_map((4, 4, 4), 2)
    assert set(np.unique(cb)) == {0, 1} and cb.sum() == 32
    with pytest.raises(InputError, match="context passes 3"):
        pass_map((4, 4, 4), 3)


def test_soft_round_goes_from_identity_to_round():
    from inrv.codec.latent import soft_round

    away = torch.tensor([-2.3, -0.8, 0.1, 0.4, 1.7, 2.05])     # not near a half-integer
    assert torch.allclose(soft_round(away, 0.01), torch.round(away), atol=1e-4)
    x = torch.linspace(-3.2, 3.2, 101)
    soft = soft_round(x, 10.0)
    assert (soft - x).abs().max() < 0.01
    mid = soft_round(x, 0.2)
    assert torch.all(mid[1:] >= mid[:-1])                      # monotone
    half = torch.tensor([0.5, 1.5, -0.5])
    assert torch.allclose(soft_round(half, 0.2), half)        # fixed points at half-integers


@pytest.mark.slow
def test_slab_training_bounds_memory_and_keeps_the_rate_honest():
    """A volume larger than max_voxels_per_step trains on random slabs (distortion and rate);
    the coded size still matches the training estimate and the render covers the whole volume."""
    vol = _phantom((40, 18, 16), seed=3)
    cfg = make_config("latent-tiny", steps=30, polish_steps=3, max_voxels_per_step=18 * 16 * 6, ctx_passes=8)
    enc = LatentModel().fit(vol, cfg, device="cpu")
    st = enc.stats
    assert abs(st["bits_estimated"] - st["bits_actual"]) <= 0.05 * st["bits_actual"] + 256
    out = LatentModel().render(enc)
    assert out.shape == vol.shape
    assert psnr(vol, np.clip(np.rint(out), 0, 255)) == pytest.approx(st["psnr"], abs=1e-6)
    assert st["psnr"] > 20


@pytest.mark.parametrize("upsample", ["linear", "cubic"])
def test_slab_step_reads_only_its_row_windows(upsample):
    """A slab step rounds and differentiates only row windows of the levels: the synthesis input and
    every level's rate inputs (its rows with a halo row, the coarser level upsampled onto them) must
    be the same from the windows as from the whole latents, for odd sizes and every slab position."""
    from inrv.codec.latent import _row_windows, _synth_input, level_shapes, rate_rows, up_torch

    shape = (37, 9, 7)
    shapes = level_shapes(shape, 5)
    g = torch.Generator().manual_seed(1)
    lat = [torch.randn((1,) + sh, generator=g) for sh in shapes]
    for r0, r1 in ((0, 6), (5, 11), (17, 29), (31, 37), (0, 36)):
        spans = _row_windows(shape, shapes, r0, r1, 1, upsample)
        assert all(0 <= lo < hi <= sh[0] for (lo, hi), sh in zip(spans, shapes))
        assert spans[0][1] - spans[0][0] < shape[0] or r1 - r0 >= shape[0] - 2   # a window, not the level
        sub = [q[:, lo:hi] for q, (lo, hi) in zip(lat, spans)]
        win = [(sh[0], lo) for sh, (lo, _) in zip(shapes, spans)]
        torch.testing.assert_close(_synth_input(sub, shape, r0, r1, upsample, 1, win),
                                   _synth_input(lat, shape, r0, r1, upsample, 1), rtol=0, atol=0)
        for k, sh in enumerate(shapes):
            a, b = rate_rows(shape[0], sh[0], r0, r1)
            lo_, hi_ = max(0, a - 1), min(sh[0], b + 1)
            assert spans[k][0] <= lo_ and hi_ <= spans[k][1]
            if k + 1 < len(shapes):
                rows = np.arange(lo_, hi_)
                torch.testing.assert_close(up_torch(sub[k + 1], sh, rows, *win[k + 1]),
                                           up_torch(lat[k + 1], sh, rows), rtol=0, atol=0)


@pytest.mark.slow
def test_rate_checkpoint_trains_the_same_model():
    """Recomputing the context network in the backward pass (the CUDA default, to save memory) is
    the same training: on a CPU the coded bytes are identical with and without it."""
    vol = _phantom((24, 14, 12), seed=4)
    out = []
    for ck in (False, True):
        cfg = make_config("latent-tiny", steps=8, polish_steps=2, max_voxels_per_step=14 * 12 * 8,
                          rate_checkpoint=ck)
        enc = LatentModel().fit(vol, cfg, device="cpu")
        assert "rate_checkpoint" not in enc.config
        out.append(enc.sections)
    assert out[0] == out[1]


@pytest.mark.slow
def test_soft_rounding_training_codes_exactly():
    vol = _phantom((20, 18, 16), seed=5)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=24, soft_round=True), device="cpu")
    ints, w, shapes, cfg = _decoded_ints(enc)
    assert any(np.any(i != 0) for i in ints)
    # exactly: the decoded latents code back to the same bytes, and a decode renders the encoder's image
    lo, hi = enc.config["sym_range"]
    assert code_latents(ints, w, shapes, 1, lo=lo, hi=hi, passes=cfg.ctx_passes) == enc.sections["latents"]
    np.testing.assert_array_equal(LatentModel().render(enc), enc.reconstruction)
    assert enc.stats["psnr"] > 20


def test_cubic_upsampling_slab_equals_whole_and_keeps_constants():
    from inrv.codec.latent import up_cubic_torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 3, generator=g)
    whole = up_cubic_torch(x, (19, 14, 3))
    np.testing.assert_array_equal(whole[:, 4:11].numpy(), up_cubic_torch(x, (19, 14, 3), np.arange(4, 11)).numpy())
    ones = up_cubic_torch(torch.ones(1, 5, 7, 3), (19, 14, 3))
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-6)
    ramp = torch.arange(8, dtype=torch.float64)[None, :, None, None].expand(1, 8, 2, 2)
    up = up_cubic_torch(ramp, (16, 2, 2))[0, 3:-3, 0, 0]     # a ramp is reproduced away from the edges
    expect = (torch.arange(16, dtype=torch.float64) + 0.5) / 2 - 0.5
    assert torch.allclose(up, expect[3:-3], atol=1e-9)


def test_files_without_new_arch_fields_decode_as_checkerboard_linear():
    """Files written before ``ctx_passes`` / ``upsample`` / ``ctx_layers`` existed decode with the old
    defaults (checkerboard, linear, one hidden layer)."""
    vol = _phantom((16, 14, 12), seed=2)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=10, polish_steps=0, ctx_passes=2, ctx_layers=1),
                            device="cpu")
    ref = LatentModel().render(enc)
    old = dict(enc.config)
    assert old.pop("ctx_passes") == 2 and old.pop("upsample") == "linear" and old.pop("ctx_layers") == 1
    enc.config = old
    np.testing.assert_array_equal(LatentModel().render(enc), ref)
    bad = dict(enc.config, upsample="sinc")
    with pytest.raises(InputError, match="unknown upsampling 'sinc'"):
        LatentModel().fit(vol, config_from_dict(bad))


def test_kumaraswamy_noise_is_bounded_and_anneals_to_uniform():
    from inrv.codec.latent import _kumaraswamy

    g = torch.Generator().manual_seed(1)
    uni = _kumaraswamy((50000,), 1.0, g)
    peaked = _kumaraswamy((50000,), 2.0, g)
    for x in (uni, peaked):
        assert x.min() >= -0.5 and x.max() <= 0.5
    assert abs(float(uni.std()) - 12 ** -0.5) < 0.005            # uniform on [-1/2, 1/2]
    assert float(peaked.std()) < float(uni.std()) - 0.05          # a > 1: concentrated near 0


def test_8_pass_coding_is_independent_of_threads_and_chunks():
    """The 8-pass coder computes a pass's parameters in parallel chunks: the bytes must not depend
    on the number of threads or the chunk size, and decoding must return the latents exactly."""
    from inrv.codec.latent import _arch_shapes

    cfg = make_config("latent-tiny", ctx_passes=8)
    shapes = level_shapes((13, 11, 9), cfg.levels)
    rng = np.random.default_rng(7)
    w = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in _arch_shapes(len(shapes), cfg).items()}
    ints = [np.clip(np.rint(rng.laplace(0, 1.5, (1,) + s)), -9, 9).astype(np.int32) for s in shapes]
    ref = code_latents(ints, w, shapes, 1, lo=-9, hi=9, passes=8)
    torch.set_num_threads(2)            # the conftest fixture restores the count after the test
    assert code_latents(ints, w, shapes, 1, lo=-9, hi=9, passes=8, chunk=16) == ref
    out = code_latents(None, w, shapes, 1, data=ref, lo=-9, hi=9, passes=8, chunk=5)
    for a, b in zip(ints, out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_weight_steps_are_chosen_per_tensor_unless_bits_are_given():
    """Default: each network tensor is entropy-coded at its own measured step (``wq``); an explicit
    ``weight_bits`` keeps fixed-precision affine packing. Both decode to the encoder's reconstruction."""
    vol = _phantom((16, 14, 12), seed=4)
    auto = LatentModel().fit(vol, make_config("latent-tiny", steps=12, polish_steps=0), device="cpu")
    cfg = config_from_dict(auto.config)
    names = list(_arch_shapes(len(level_shapes((16, 14, 12), cfg.levels)), cfg))
    assert "weight_bits" not in auto.config and len(auto.config["wq"]) == len(names)
    assert len({e for e, _ in auto.config["wq"]}) > 1          # not one precision for all tensors
    fixed = LatentModel().fit(vol, make_config("latent-tiny", steps=12, polish_steps=0, weight_bits=6), device="cpu")
    assert fixed.config["weight_bits"] == 6 and "wq" not in fixed.config
    for enc in (auto, fixed):     # the stored precision is the one the decoder uses
        np.testing.assert_array_equal(LatentModel().render(enc), enc.reconstruction)


@pytest.mark.parametrize("kernel,convs", [(5, 1), (3, 2)])
def test_wider_synthesis_renders_slab_by_slab_like_whole(kernel, convs):
    """A 5x5x5 final convolution or a second 3x3x3 one widens the halo; a slab of rows rendered
    with its halo equals the same rows of a whole-volume render, and the file decodes exactly."""
    from inrv.codec.latent import Synthesis, _synth_input

    g = torch.Generator().manual_seed(0)
    syn = Synthesis(3, 6, 1, 2, kernel, convs)
    with torch.no_grad():
        for p in syn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    assert syn.halo == (2 if (kernel, convs) != (3, 1) else 1)
    qs = [torch.randn(1, 11, 9, 7, generator=g), torch.randn(1, 6, 5, 4, generator=g), torch.randn(1, 3, 3, 2, generator=g)]
    with torch.no_grad():
        whole = syn(_synth_input(qs, (11, 9, 7), 0, 11, "linear", syn.halo))
        part = syn(_synth_input(qs, (11, 9, 7), 3, 8, "linear", syn.halo))
    assert whole.shape == (11, 9, 7)
    torch.testing.assert_close(part, whole[3:8], rtol=0, atol=1e-6)
    vol = _phantom((14, 12, 10), seed=5)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=8, polish_steps=0, synth_kernel=kernel,
                                             synth_convs=convs), device="cpu")
    np.testing.assert_array_equal(LatentModel().render(enc), enc.reconstruction)
    with pytest.raises(InputError, match="unsupported synthesis"):
        Synthesis(3, 6, 1, 2, 4, 1)


@pytest.mark.parametrize("passes,layers,coarse", [(2, 2, 7), (8, 3, 7), (8, 2, 27)])
def test_deeper_context_codes_exactly(passes, layers, coarse):
    """``ctx_layers`` > 1 (residual hidden layers) and the 27-cell coarse context: the coder's numpy
    twin decodes the latents bit for bit and the estimate tracks the coded size (the training
    features and the coder's features are the same function)."""
    vol = _phantom((14, 12, 10), seed=6)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=10, polish_steps=0, ctx_layers=layers,
                                             ctx_passes=passes, ctx_coarse=coarse), device="cpu")
    assert enc.config["ctx_layers"] == layers
    assert enc.config.get("ctx_coarse", 7) == coarse
    ints, w, shapes, cfg = _decoded_ints(enc)
    assert f"ctx.mids.{layers - 2}.weight" in w and f"ctx.mids.{layers - 1}.weight" not in w
    assert code_latents(ints, w, shapes, 1, lo=enc.config["sym_range"][0], hi=enc.config["sym_range"][1],
                        passes=passes) == enc.sections["latents"]
    np.testing.assert_array_equal(LatentModel().render(enc), enc.reconstruction)
    assert abs(enc.stats["bits_actual"] - enc.stats["bits_estimated"]) <= 0.05 * enc.stats["bits_actual"] + 64


def test_weight_step_search_measures_every_step_and_keeps_the_cheapest():
    """The rounding error of a tensor is not monotone in the step; the search must keep the step
    with the lowest measured cost, not stop at the first rise."""
    from inrv.codec import netcode
    from inrv.codec.latent import _choose_weight_steps

    state = {"syn.b": np.array([0.3013], np.float32), "ctx.w": np.array([0.25, -0.5], np.float32)}
    calls = []

    def dist_of(deq):
        calls.append(1)
        return 1e3 * float((deq["syn.b"][0] - 0.3013) ** 2)

    def lat_bits_of(deq):
        return 1e4 * float(np.sum((deq["ctx.w"] - state["ctx.w"]) ** 2))   # exact at any step >= 1/4

    lam = 1e-6
    exps = _choose_weight_steps(state, ["syn.b", "ctx.w"], dist_of, lat_bits_of, lam, span=12)

    def best(name, term):
        f = netcode.finest_exp(state[name])
        costs = {e: term(netcode.dequantize(netcode.quantize(state[name], e), e)) +
                 lam * netcode.tensor_bits(state[name], e) for e in range(f - 12, f + 1)}
        return min(costs, key=costs.get), costs

    e_b, costs_b = best("syn.b", lambda q: 1e3 * float((q[0] - 0.3013) ** 2))
    assert exps["syn.b"] == e_b
    assert len(calls) == 13                              # every step measured once
    # the error is not monotone: a finer step than the best is sometimes worse than a coarser one
    assert any(costs_b[e + 1] > costs_b[e] for e in costs_b if e + 1 in costs_b and e < e_b)
    e_w, _ = best("ctx.w", lambda q: lam * 1e4 * float(np.sum((q - state["ctx.w"]) ** 2)))
    assert exps["ctx.w"] == e_w


def test_newer_payload_version_is_refused_with_upgrade_message():
    from inrv.codec.latent import FORMAT_VERSION
    from inrv.errors import UnsupportedVersionError

    vol = _phantom((12, 10, 8), seed=7)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=4, polish_steps=0, bg_block=0), device="cpu")
    assert enc.config["v"] == 2           # files without a background mask stay readable by version-2 readers
    enc.config = dict(enc.config, v=FORMAT_VERSION + 1)
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        LatentModel().render(enc)


@pytest.mark.slow
def test_context_width_follows_the_rate_unless_given():
    """``ctx_width=None``: 24 where the latents dominate the file (low lambda or large volumes), 16 at
    low rates on small volumes; the width used is stored and decodes; a given width is kept."""
    from inrv.codec.latent import _auto_ctx_width

    assert _auto_ctx_width(1e-3, 64 ** 3) == 24 and _auto_ctx_width(1e-2, 64 ** 3) == 16
    assert _auto_ctx_width(1e-2, 197 * 233 * 189) == 24
    vol = _phantom((12, 10, 8), seed=8)
    for kw, want in (({"lmbda": 1e-3}, 24), ({"lmbda": 1e-2}, 16), ({"lmbda": 1e-3, "ctx_width": 8}, 8)):
        enc = LatentModel().fit(vol, make_config("balanced", steps=2, polish_steps=0, **kw), device="cpu")
        assert enc.config["ctx_width"] == want
        np.testing.assert_array_equal(LatentModel().render(enc), enc.reconstruction)


@pytest.mark.parametrize("coarse", [7, 27])
def test_pass_by_pass_training_rate_equals_masked_features(coarse):
    """The training rate is computed pass by pass on strided sub-lattices (no masks); it must be the
    same function as the masked-feature forward, whole and on a row range with its halo rows, for
    odd sizes, every phase."""
    from inrv.codec.entropy import laplace_bits
    from inrv.codec.latent import ContextModel, pass_map

    torch.manual_seed(0)
    ctx = ContextModel(2, 12, 3, passes=8, layers=3, coarse=coarse)
    with torch.no_grad():
        for prm in ctx.parameters():
            prm.add_(torch.randn_like(prm) * 0.3)
    q = torch.round(torch.randn(2, 9, 7, 6) * 3)
    co = torch.randn(2, 9, 7, 6)
    pm = torch.as_tensor(pass_map((9, 7, 6), 8))
    mean, ls = ctx(ctx.features(q, co, pm), 1)
    ref = laplace_bits(q, mean, ls)
    assert torch.allclose(ctx.pass_bits(q, co, 1, 0, 0, 9), ref.sum(), rtol=1e-5)
    assert torch.allclose(ctx.pass_bits(q, None, 1, 0, 0, 9),
                          laplace_bits(q, *ctx(ctx.features(q, None, pm), 1)).sum(), rtol=1e-5)
    for a, b in ((3, 6), (4, 7), (0, 2), (7, 9)):
        lo, hi = max(0, a - 1), min(9, b + 1)
        part = ctx.pass_bits(q[:, lo:hi], co[:, lo:hi], 1, lo, a, b)
        assert torch.allclose(part, ref[:, a:b].sum(), rtol=1e-5), (a, b)
    # gradients too (the training rate gathers neighbours with its own backward): with respect to
    # the latents, the coarse grid and the network, against autograd through the masked features
    qg, cg = q.clone().requires_grad_(), co.clone().requires_grad_()
    ctx.zero_grad()
    laplace_bits(qg, *ctx(ctx.features(qg, cg, pm), 1)).sum().backward()
    want = [qg.grad.clone(), cg.grad.clone()] + [prm.grad.clone() for prm in ctx.parameters()]
    for ckpt in (False, True):      # the same with the context network recomputed in the backward pass
        qg.grad = cg.grad = None
        ctx.zero_grad()
        ctx.pass_bits(qg, cg, 1, 0, 0, 9, checkpoint=ckpt).backward()
        got = [qg.grad, cg.grad] + [prm.grad for prm in ctx.parameters()]
        for g, w in zip(got, want):
            assert float((g - w).abs().max()) <= 1e-4 * float(w.abs().max()), (ckpt, float((g - w).abs().max()))


def test_background_blocks_mask_expand_and_pack_round_trip():
    """Blocks equal to the minimum, their voxel mask (whole or by rows, odd sizes), and the stored bits."""
    from inrv.codec.latent import background_blocks, expand_blocks, pack_blocks, unpack_blocks

    vol = np.full((11, 9, 6), 5, np.int16)
    vol[6:, 2:4, 1] = 7                      # touches blocks (1, 0, 0) and (2, 0, 0) at block 4
    bb = background_blocks(vol, 4)
    assert bb.shape == (3, 3, 2)
    assert not bb[1, 0, 0] and not bb[2, 0, 0] and bb[0, 0, 0] and bb[2, 2, 1]
    full = expand_blocks(bb, 4, vol.shape)
    assert full.shape == vol.shape and (vol[full] == 5).all()
    for r0, r1 in ((0, 11), (3, 7), (5, 6), (8, 11)):
        np.testing.assert_array_equal(expand_blocks(bb, 4, vol.shape, r0, r1), full[r0:r1])
    np.testing.assert_array_equal(unpack_blocks(pack_blocks(bb), bb.shape), bb)
    with pytest.raises(InputError, match="corrupt background mask"):
        unpack_blocks(pack_blocks(bb), (6, 3, 2))     # a grid that needs more bytes than stored


@pytest.mark.slow
def test_background_mask_restores_the_background_exactly_and_codes_honestly():
    """With ``bg_block`` the all-minimum blocks decode to exactly the minimum, the mask's bytes are in
    the rate, the payload is version 3 (older readers refuse it); without background no mask is
    written and the payload stays version 2."""
    from inrv.codec.latent import background_blocks, expand_blocks

    vol = _phantom((24, 20, 18), seed=3)
    enc = LatentModel().fit(vol, make_config("latent-tiny", steps=20, polish_steps=0, bg_block=4), device="cpu")
    assert enc.config["v"] == 3 and enc.config["bg_block"] == 4 and "background" in enc.sections
    bg = expand_blocks(background_blocks(vol, 4), 4, vol.shape)
    assert 0.2 < bg.mean() < 0.9
    rec = LatentModel().render(enc)
    assert (rec[bg] == 0).all()
    assert enc.stats["background_fraction"] == pytest.approx(bg.mean())
    sec = sum(len(b) for b in enc.sections.values())
    assert enc.stats["bpv_sections"] == pytest.approx(8.0 * sec / vol.size)
    full = np.full((8, 8, 8), 40, np.uint8)
    full[2:5, 3:6, 1:7] = 90
    full[0, 0, 0] = 10          # the minimum fills no whole block: no mask
    e2 = LatentModel().fit(full, make_config("latent-tiny", steps=5, polish_steps=0, bg_block=4), device="cpu")
    assert e2.config["v"] == 2 and "background" not in e2.sections and "bg_block" not in e2.config
    little = np.full((16, 16, 16), 40, np.uint8)
    little[:4, :4, :8] = 0      # 2 of 64 blocks (3 %): below the 20 % at which the mask pays
    e3 = LatentModel().fit(little, make_config("latent-tiny", steps=5, polish_steps=0), device="cpu")
    assert "background" not in e3.sections and e3.stats["background_fraction"] == 0.0
    little[:8] = 0              # half of the volume: the default (bg_block 4) masks it
    e4 = LatentModel().fit(little, make_config("latent-tiny", steps=5, polish_steps=0), device="cpu")
    assert e4.config["bg_block"] == 4 and e4.stats["background_fraction"] == pytest.approx(0.5)
    assert (LatentModel().render(e4)[:8] == 0).all()
    bad = dict(enc.sections)
    bad["background"] = bad["background"][:-3]
    from inrv.codec.base import Encoded

    broken = Encoded(model="latent", config=enc.config, sections=bad, shape=enc.shape, value_range=enc.value_range)
    with pytest.raises(InputError, match="background mask"):
        LatentModel().render(broken)
    huge = Encoded(model="latent", config=dict(enc.config, bg_block=10**9), sections=enc.sections,
                   shape=enc.shape, value_range=enc.value_range)
    with pytest.raises(InputError, match="bg_block=1000000000"):  # a hostile block edge is refused, not expanded
        LatentModel().render(huge)


@pytest.mark.parametrize("damage,message", [
    (lambda e: dict(e.sections, latents=e.sections["latents"][:3]), "latent-model payload"),
    (lambda e: dict(e.sections, synthesis=e.sections["synthesis"][:5]), "latent-model payload"),
    (lambda e: {k: v for k, v in e.sections.items() if k != "latents"}, "latent-model payload"),
])
def test_hostile_latent_payloads_are_one_clear_input_error(tiny_fit, damage, message):
    """A truncated or missing section is refused with a message naming the payload, never a traceback."""
    from inrv.encoded import Encoded

    _, enc, _ = tiny_fit
    bad = Encoded(model="latent", config=enc.config, sections=damage(enc), shape=enc.shape,
                  value_range=enc.value_range)
    with pytest.raises(InputError, match=message):
        LatentModel().render(bad)
