import numpy as np
import pytest
import torch

from inrv.codec.quant import dequantize_state, fake_quantize, quantize_state
from inrv.errors import FormatError


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.normal(size=(4, 4, 3, 3, 3)).astype(np.float32),   # per-channel (108 per row)
        "lin.weight": rng.uniform(-2, 5, size=(30, 30)).astype(np.float32),   # per-tensor (rows of 30)
        "lin.bias": rng.normal(size=30).astype(np.float32),
        "const": np.full((3, 40), 0.25, np.float32),
        "empty": np.zeros((0, 5), np.float32),
    }


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12, 16])
def test_round_trip_error_is_at_most_half_a_step(bits):
    state = _state()
    payload, meta = quantize_state(state, bits)
    out = dequantize_state(payload, meta)
    assert set(out) == set(state)
    n_values = sum(a.size for a in state.values())
    assert len(payload) <= sum((a.size * bits + 7) // 8 for a in state.values())
    assert len(payload) >= n_values * bits // 8
    for name, a in state.items():
        assert out[name].shape == a.shape and out[name].dtype == np.float32
        if a.size == 0:
            continue
        rows = a.reshape(a.shape[0], -1) if meta["tensors"][name]["axis"] == 0 else a.reshape(1, -1)
        step = (rows.max(1) - rows.min(1)) / (2**bits - 1)
        err = np.abs(out[name] - a).reshape(rows.shape)
        assert np.all(err <= step[:, None] / 2 + 1e-6 * (1 + np.abs(rows)))


def test_per_tensor_bits_and_constant_tensor():
    state = _state()
    payload, meta = quantize_state(state, {"conv.weight": 4, "lin.weight": 6})
    assert meta["tensors"]["conv.weight"]["bits"] == 4 and meta["tensors"]["lin.bias"]["bits"] == 8
    out = dequantize_state(payload, meta)
    np.testing.assert_array_equal(out["const"], state["const"])


def test_more_bits_smaller_error():
    state = _state(1)
    errs = []
    for bits in (4, 8, 12):
        out = dequantize_state(*quantize_state(state, bits))
        errs.append(max(float(np.abs(out[k] - state[k]).max()) for k in state if state[k].size))
    assert errs[0] > errs[1] > errs[2]


def _corruptions(meta):
    import copy

    def m(f):
        c = copy.deepcopy(meta)
        f(c["tensors"])
        return c

    yield "scheme", dict(meta, scheme="nope")
    yield "bits", m(lambda t: t["lin.bias"].update(bits=1))
    yield "bits17", m(lambda t: t["lin.bias"].update(bits=17))
    yield "shape", m(lambda t: t["lin.bias"].update(shape=[31]))
    yield "huge", m(lambda t: t["lin.bias"].update(shape=[10**9, 10**9]))
    yield "negdim", m(lambda t: t["lin.bias"].update(shape=[-30]))
    yield "offset", m(lambda t: t["lin.bias"].update(byte_offset=10**12))
    yield "scale_len", m(lambda t: t["conv.weight"].update(scale=[1.0]))
    yield "nan", m(lambda t: t["lin.bias"].update(scale=[float("nan")]))
    yield "axis", m(lambda t: t["lin.bias"].update(axis=3))
    yield "type", m(lambda t: t["lin.bias"].update(shape="30"))
    yield "missing", m(lambda t: t.pop("lin.bias"))
    yield "not_dict", m(lambda t: t.update({"lin.bias": [1, 2]}))


def test_corrupt_meta_raises_format_error():
    payload, meta = quantize_state(_state(), 8)
    for what, bad in _corruptions(meta):
        with pytest.raises(FormatError):
            dequantize_state(payload, bad)
        assert what  # names the case in a failure traceback
    with pytest.raises(FormatError):
        dequantize_state(payload[:-1], meta)
    with pytest.raises(FormatError):
        dequantize_state(payload + b"\0", meta)
    with pytest.raises(FormatError):
        dequantize_state(payload, None)


def test_fake_quantize_matches_stored_values_and_passes_gradients():
    w = torch.randn(30, 30, requires_grad=True)
    fq = fake_quantize(w, 6)
    stored = dequantize_state(*quantize_state({"w": w.detach().numpy()}, 6))["w"]
    np.testing.assert_allclose(fq.detach().numpy(), stored, atol=1e-5)
    fq.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.ones((30, 30), np.float32))
