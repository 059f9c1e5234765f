"""inrv.codec.netcode: entropy-coded network weights (power-of-two steps, Laplace range coding)."""

import numpy as np
import pytest

from inrv.codec import netcode
from inrv.errors import InputError


def test_round_trip_is_exact_at_the_chosen_steps():
    rng = np.random.default_rng(0)
    ts = [rng.laplace(0, 0.2, (16, 11)).astype(np.float32), rng.normal(0.5, 0.01, 3).astype(np.float32),
          np.zeros(7, np.float32), rng.normal(0, 3e-2, (1, 11, 3, 3, 3)).astype(np.float32)]
    exps = [6, 9, 0, 12]
    payload, meta, bound = netcode.encode(ts, exps)
    out = netcode.decode(payload, meta, bound, [t.size for t in ts])
    for t, e, o in zip(ts, exps, out):
        want = netcode.dequantize(netcode.quantize(t, e), e)
        np.testing.assert_array_equal(o, want.ravel())
        assert np.max(np.abs(o - t.ravel())) <= 2.0 ** -e / 2 + 1e-7


def test_coded_size_tracks_the_estimate_and_beats_fixed_bits():
    rng = np.random.default_rng(1)
    w = rng.laplace(0, 0.1, 2000).astype(np.float32)
    e = netcode.finest_exp(w) - 8                  # ~8 bits over the range
    payload, _, _ = netcode.encode([w], [e])
    est = netcode.tensor_bits(w, e)
    assert abs(8 * len(payload) - est) <= 0.02 * est + 64
    assert 8 * len(payload) < 0.8 * 8 * w.size     # Laplace-distributed weights: far below 8 bits each


def test_coarser_steps_cost_fewer_bits():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, 500)
    bits = [netcode.tensor_bits(w, e) for e in range(0, 8)]
    assert all(a < b for a, b in zip(bits, bits[1:]))


def test_scale_codes_are_exact_and_bounded():
    for c in (0, 63, 64, 200):
        assert netcode.scale_of(c) > 0
    assert netcode.scale_of(64) == 2 * netcode.scale_of(0)
    with pytest.raises(InputError):
        netcode.scale_of(10 ** 6)


def test_bad_parameters_are_input_errors():
    payload, meta, bound = netcode.encode([np.ones(4, np.float32)], [3])
    with pytest.raises(InputError):
        netcode.decode(payload, meta + [[1, 1]], bound, [4])
    with pytest.raises(InputError):
        netcode.decode(payload, [[99, 1]], bound, [4])
    with pytest.raises(InputError):
        netcode.decode(payload, meta, 0, [4])
