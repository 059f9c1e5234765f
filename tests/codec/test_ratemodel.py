"""The rate model that guides the lambda search (codec/latent/ratemodel.py): a Haar transform coder
whose curve the search solves on."""

import math

import numpy as np
import pytest

from conftest import ellipsoid_phantom
from inrv.codec.latent import ratemodel
from inrv.codec.latent.ratemodel import RateProxy, rate_level


def _textured(shape=(24, 20, 16), seed=0):
    rng = np.random.default_rng(seed)
    vol = ellipsoid_phantom(shape).astype(np.float64)
    return vol + rng.normal(0, 20, shape) * (vol > 0)


def test_rate_and_quality_fall_as_lambda_grows():
    rp = RateProxy(_textured())
    meas = [rp.measure(lm) for lm in (1e-5, 1e-4, 1e-3, 1e-2)]
    rates, psnrs = zip(*meas)
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs
    # the transform is orthonormal, so no voxel-domain error exceeds what rounding every coefficient
    # to its step allows: MSE <= delta^2 / 4
    for lm, p in zip((1e-5, 1e-4, 1e-3, 1e-2), psnrs):
        assert p >= 10 * math.log10(4 / (6 * lm / math.log(2))) - 1e-6


@pytest.mark.parametrize("by_rate", [True, False])
def test_solve_inverts_the_proxy(by_rate):
    rp = RateProxy(_textured(seed=1))
    lam0 = 3e-4
    r, p = rp.measure(lam0)
    level = 0.7 if by_rate else -1.5
    goal = level * r ** ratemodel.RATE_POWER if by_rate else p + level
    lam = rp.solve(goal, by_rate, level)
    r1, p1 = rp.measure(lam)
    got = level * r1 ** ratemodel.RATE_POWER if by_rate else p1 + level
    assert abs(got - goal) <= 0.02 * abs(goal), (lam, lam0)
    assert rate_level(goal, r) == pytest.approx(level) if by_rate else True


def test_out_of_reach_and_constant_volumes():
    rp = RateProxy(_textured(seed=2))
    assert rp.solve(1e4, True, 1.0) == ratemodel.LAMBDA_RANGE[0]       # more bits than any lambda gives
    assert rp.solve(1e-9, True, 1.0) == ratemodel.LAMBDA_RANGE[1]
    assert RateProxy(np.full((8, 8, 8), 5, np.int16)).solve(0.5, True, 1.0) is None
    assert RateProxy(np.arange(12.0).reshape(3, 4)).measure(1e-3)[0] > 0     # 2D, odd sizes


def test_large_volumes_are_measured_on_slabs(monkeypatch):
    vol = _textured((64, 20, 16), seed=3)
    whole = RateProxy(vol).measure(5e-4)
    monkeypatch.setattr(ratemodel, "MAX_VOXELS", 20 * 16 * 32)
    part = RateProxy(vol)
    assert part.n < vol.size
    r, p = part.measure(5e-4)
    assert abs(r - whole[0]) < 0.2 * whole[0] and abs(p - whole[1]) < 1.5
