import dataclasses

import numpy as np
import pytest
import torch
from conftest import PAPER_TINY

import inrv
from inrv.codec import paper as paper_mod
from inrv.codec.paper import slabs as paper_slabs
from inrv.codec.config import make_config
from inrv.codec.downsample import kspace_downsample
from inrv.codec.paper import PaperModel, count_params
from inrv.errors import DeviceError, FormatError, InputError

TINY = dict(PAPER_TINY, steps=8)


def _phantom(shape=(16, 16, 16), seed=0):
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(g[0] ** 2 + (1.3 * g[1]) ** 2 + g[2] ** 2)
    vol = 100 * (r < 0.8) + 60 * (np.abs(g[0] - 0.2) < 0.15) * (r < 0.8) + 30 * np.cos(6 * g[1])
    return vol.astype(np.float32)


def test_end_to_end_lowers_loss_and_beats_trilinear():
    x = _phantom()
    losses = []
    cfg = make_config("tiny", steps=150, points_per_step=1024, ds=2, sn=16, nc=4, attn_width=8, attn_blocks=1,
                      lr_prefit_steps=50, seed=0)
    enc = PaperModel().fit(x, cfg, device="cpu", progress=lambda s, t, i: losses.append(i["loss"]))
    assert losses and losses[-1] < 0.5 * losses[0]
    y = inrv.decode(enc)
    assert y.shape == x.shape and y.dtype == np.float32
    lr = kspace_downsample(x, 2)
    tri = torch.nn.functional.interpolate(torch.from_numpy(lr)[None, None], size=x.shape, mode="trilinear",
                                          align_corners=False)[0, 0].numpy()
    err_model = float(np.mean((y - x) ** 2))
    err_tri = float(np.mean((tri - x) ** 2))
    assert err_model < err_tri, (err_model, err_tri)
    assert enc.stats["params"] == count_params(cfg)
    assert enc.stats["psnr_quantised"] > 15


def test_encoded_layout_and_any_output_shape():
    x = _phantom((10, 9, 7))
    enc = inrv.encode(x, "tiny", device="cpu", **TINY)
    assert enc.model == "paper" and enc.shape == (10, 9, 7)
    assert enc.value_range == (float(x.min()), float(x.max()))
    assert enc.config["lr_shape"] == [5, 5, 4] and enc.config["ds"] == [2, 2, 2]
    assert len(enc.sections["weights"]) == enc.stats["params"]  # 8 bits per weight
    for shape in [(20, 18, 14), (3, 4, 5), (10, 9, 7)]:
        y = inrv.decode(enc, shape=shape)
        assert y.shape == shape and np.all(np.isfinite(y))
        assert y.min() >= x.min() - 1e-3 and y.max() <= x.max() + 1e-3


def test_chunked_render_equals_one_shot(monkeypatch):
    x = _phantom((8, 8, 8))
    enc = inrv.encode(x, "tiny", device="cpu", **TINY)
    whole = inrv.decode(enc)
    monkeypatch.setattr(paper_slabs, "RENDER_CHUNK", 37)
    np.testing.assert_allclose(inrv.decode(enc), whole, atol=1e-5)


def test_seeded_fit_is_reproducible():
    x = _phantom((8, 8, 8))
    a = inrv.encode(x, "tiny", device="cpu", **TINY)
    b = inrv.encode(x, "tiny", device="cpu", **TINY)
    assert a.sections == b.sections


@pytest.mark.parametrize("shape,ds", [((9, 7, 1), (2, 2, 1)), ((9, 7, 1), (2, 2, 2)), ((5, 6, 3), (4, 4, 8))])
def test_odd_shapes_and_thin_axes(shape, ds):
    x = np.random.default_rng(0).integers(0, 4000, size=shape).astype(np.int16)
    enc = inrv.encode(x, "tiny", device="cpu", **dict(TINY, ds=ds))
    y = inrv.decode(enc)
    assert y.shape == shape and y.dtype == np.float32


def test_constant_bool_and_bad_inputs():
    enc = inrv.encode(np.full((6, 6, 6), 7, np.uint8), "tiny", device="cpu", **TINY)
    np.testing.assert_array_equal(inrv.decode(enc), np.full((6, 6, 6), 7.0, np.float32))
    enc = inrv.encode(np.zeros((6, 6, 6), bool), "tiny", device="cpu", **TINY)
    assert inrv.decode(enc).shape == (6, 6, 6)
    bad = np.zeros((4, 4, 4), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError):
        inrv.encode(bad, "tiny", **TINY)
    with pytest.raises(InputError):
        inrv.encode(np.zeros((4, 4, 4), np.complex64), "tiny", **TINY)
    with pytest.raises(InputError):
        inrv.encode(np.zeros((4, 0, 4)), "tiny", **TINY)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            inrv.encode(np.zeros((4, 4, 4)), "tiny", device="cuda", **TINY)


def test_corrupt_stream_raises_format_error():
    x = _phantom((8, 8, 8))
    enc = inrv.encode(x, "tiny", device="cpu", **TINY)
    cases = [
        dataclasses.replace(enc, sections={"weights": enc.sections["weights"][:-3]}),
        dataclasses.replace(enc, sections={}),
        dataclasses.replace(enc, config=dict(enc.config, sn=9)),
        dataclasses.replace(enc, config=dict(enc.config, nc=10**6)),
        dataclasses.replace(enc, config=dict(enc.config, lr_shape=[1, 2, 3])),
        dataclasses.replace(enc, config=dict(enc.config, quant={"scheme": "x"})),
        dataclasses.replace(enc, value_range=(5.0, float("nan"))),
    ]
    for bad in cases:
        with pytest.raises(FormatError):
            inrv.decode(bad)


def test_quantisation_aware_fine_tune_runs():
    x = _phantom((8, 8, 8))
    enc = inrv.encode(x, "tiny", device="cpu", **dict(TINY, qat_steps=3, weight_bits=6))
    assert enc.config["quant"]["tensors"]["siren.head.weight"]["bits"] == 6
    assert inrv.decode(enc).shape == (8, 8, 8)


def _latent(enc):
    """The SIREN's low-res volume rebuilt from the stored (quantised) weights."""
    from inrv.codec.config import config_from_dict
    from inrv.codec.quant import dequantize_state
    from inrv.codec.siren import grid_coords

    net = paper_mod._build(config_from_dict(enc.config))
    state = dequantize_state(enc.sections["weights"], enc.config["quant"])
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    lr_shape = tuple(enc.config["lr_shape"])
    with torch.no_grad():
        return net.lowres(grid_coords(lr_shape), lr_shape).numpy()


def test_prefit_fits_the_siren_to_the_downsampled_volume():
    x = _phantom((16, 16, 16))
    x01 = (x - x.min()) / (x.max() - x.min())
    lr = kspace_downsample(x01, 2)
    base = dict(TINY, steps=0, sn=24)
    before = np.abs(_latent(inrv.encode(x, "tiny", device="cpu", lr_prefit_steps=0, **base)) - lr).mean()
    after = np.abs(_latent(inrv.encode(x, "tiny", device="cpu", lr_prefit_steps=150, **base)) - lr).mean()
    assert after < 0.3 * before, (before, after)


def test_full_batch_training_is_chunked_without_changing_the_result(monkeypatch):
    x = _phantom((8, 8, 6))
    kw = dict(TINY, points_per_step=None, steps=3, lr_loss_weight=0.5)
    whole = inrv.encode(x, "tiny", device="cpu", **kw)
    monkeypatch.setattr(paper_slabs, "RENDER_CHUNK", 50)
    chunked = inrv.encode(x, "tiny", device="cpu", **kw)
    a = _latent(whole)
    b = _latent(chunked)
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert whole.stats["loss"] == pytest.approx(chunked.stats["loss"], rel=1e-4)


def test_bad_config_values_raise_input_error():
    x = _phantom((6, 6, 6))
    for bad in [dict(steps=-1), dict(points_per_step=-5), dict(lr=0.0), dict(sn=0), dict(attn_width=7, attn_heads=2)]:
        with pytest.raises(InputError):
            inrv.encode(x, "tiny", device="cpu", **dict(TINY, **bad))


def test_resolve_device_and_seeding():
    from inrv.codec.device import resolve_device, seed_everything

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    with pytest.raises(DeviceError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(DeviceError) as e:
                resolve_device(name)
            assert "\n" not in str(e.value)
    seed_everything(3)
    a = torch.rand(4), np.random.rand(2)
    seed_everything(3)
    b = torch.rand(4), np.random.rand(2)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_absurd_output_shape_is_refused():
    enc = inrv.encode(_phantom((6, 6, 6)), "tiny", device="cpu", **TINY)
    for bad in [(0, 4, 4), (4, 4), (10**6, 10**6, 10**6)]:
        with pytest.raises(InputError):
            inrv.decode(enc, shape=bad)
