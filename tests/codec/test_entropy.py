"""inrv.codec.entropy: range coding with quantised-Laplace models, and its torch bit estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inrv.codec.entropy import (
    SCALE_TABLE,
    LaplaceReader,
    LaplaceStream,
    decode_laplace,
    encode_laplace,
    laplace_bits,
    snap_params,
)


def _laplace_ints(rng, n, scale):
    return np.rint(rng.laplace(0.0, scale, n)).astype(np.int32)


def test_round_trip_per_symbol_params_is_exact():
    rng = np.random.default_rng(0)
    n = 20000
    mean_f = rng.normal(0, 2, n)
    ls_f = rng.normal(0, 1.5, n)
    mean, scale = snap_params(mean_f, ls_f)
    sym = (np.rint(mean) + _laplace_ints(rng, n, 1.0) * np.rint(scale + 1)).astype(np.int32)
    data, lo, hi = encode_laplace(sym, mean, scale)
    out = decode_laplace(data, n, mean, scale, lo, hi)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, sym)


def test_stream_of_several_arrays_round_trips_in_order():
    rng = np.random.default_rng(1)
    parts = [_laplace_ints(rng, n, s) for n, s in ((100, 0.3), (5000, 4.0), (1, 1.0), (0, 1.0))]
    st = LaplaceStream(-80, 80)
    for p in parts:
        st.encode(p, 0.0, 1.0)
    data = st.getvalue()
    rd = LaplaceReader(data, -80, 80)
    for p in parts:
        np.testing.assert_array_equal(rd.decode(np.zeros(p.size), np.ones(p.size)), p)


def test_symbol_out_of_range_is_refused():
    st = LaplaceStream(-2, 2)
    with pytest.raises(ValueError):
        st.encode(np.array([3]), 0.0, 1.0)


def test_snap_params_lands_on_fixed_grid():
    m, s = snap_params(np.array([0.01, 1.234, -7.77]), np.array([-50.0, 0.0, 50.0]))
    assert s[0] == SCALE_TABLE[0] and s[2] == SCALE_TABLE[-1]
    assert s[1] in set(SCALE_TABLE.tolist()) and abs(s[1] - 1.0) < 0.08
    np.testing.assert_array_equal(m * 16, np.rint(m * 16))
    assert abs(m[1] - 1.234) <= 1 / 32


def test_torch_bits_match_coded_size():
    """The training estimate (sum of -log2 p) is what the coder really writes, within 1 %."""
    rng = np.random.default_rng(2)
    n = 50000
    mean, scale = snap_params(np.zeros(n), np.log(rng.uniform(0.2, 6.0, n)))
    sym = np.rint(rng.laplace(0, scale)).astype(np.int32)
    data, lo, hi = encode_laplace(sym, mean, scale, -200, 200)
    est = laplace_bits(torch.as_tensor(sym, dtype=torch.float64), torch.as_tensor(mean),
                       torch.log(torch.as_tensor(scale))).sum().item()
    actual = 8 * len(data)
    assert abs(actual - est) / est < 0.01


def test_background_costs_almost_nothing():
    n = 100000
    mean, scale = snap_params(np.zeros(n), np.full(n, -100.0))
    data, lo, hi = encode_laplace(np.zeros(n, np.int32), mean, scale, -20, 20)
    assert len(data) <= 16


def test_laplace_bits_gradient_is_finite_and_pulls_to_mean():
    x = torch.tensor([3.0, -2.0, 0.2], requires_grad=True)
    b = laplace_bits(x, torch.zeros(3), torch.zeros(3))
    b.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0] > 0 and x.grad[1] < 0
