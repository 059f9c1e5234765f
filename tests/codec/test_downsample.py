import numpy as np
import pytest

from inrv.codec.downsample import kspace_downsample, lowres_shape


def _field(shape, freqs):
    """sum of cosines at cell centres; freqs: list of (kx, ky, kz, amplitude, phase)."""
    g = np.meshgrid(*[(np.arange(n) + 0.5) / n for n in shape], indexing="ij")
    out = np.full(shape, 2.0)
    for kx, ky, kz, a, p in freqs:
        out = out + a * np.cos(2 * np.pi * (kx * g[0] + ky * g[1] + kz * g[2]) + p)
    return out


@pytest.mark.parametrize("shape,ds", [((32, 32, 32), (2, 2, 2)), ((64, 32, 16), (4, 4, 2)), ((33, 20, 9), (2, 4, 1)),
                                      ((40, 24, 16), (8, 8, 8)), ((17, 15, 1), (2, 2, 8))])
def test_band_limited_signal_is_kept_exactly(shape, ds):
    m = lowres_shape(shape, ds)
    assert m == tuple(-(-n // f) for n, f in zip(shape, ds))
    # frequencies strictly below the low-res Nyquist limit on every axis
    kmax = [max(0, (mm - 1) // 2) for mm in m]
    freqs = [(kmax[0], 0, 0, 1.0, 0.3), (0, kmax[1], kmax[2], 0.5, 1.0), (1 if kmax[0] else 0, 1 if kmax[1] else 0, 0, 0.7, -0.4)]
    lr = kspace_downsample(_field(shape, freqs), ds)
    assert lr.shape == m and lr.dtype == np.float32
    np.testing.assert_allclose(lr, _field(m, freqs), atol=1e-4)


def test_content_above_the_band_is_removed_and_mean_preserved():
    shape, ds = (32, 32, 32), (2, 2, 2)
    low = [(3, 1, 2, 1.0, 0.0)]
    high = [(9, 0, 0, 1.0, 0.2), (0, 12, 0, 0.8, 0.0), (0, 0, 15, 0.5, 1.0)]   # above 16/2 = 8 cycles
    lr = kspace_downsample(_field(shape, low + high), ds)
    np.testing.assert_allclose(lr, _field((16, 16, 16), low), atol=1e-4)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, size=(21, 14, 11))
    np.testing.assert_allclose(kspace_downsample(x, (4, 2, 8)).mean(), x.mean(), rtol=1e-5)


def test_factor_one_and_dtypes():
    x = (np.arange(4 * 5 * 6) % 7).reshape(4, 5, 6).astype(np.uint8)
    np.testing.assert_array_equal(kspace_downsample(x, (1, 1, 1)), x.astype(np.float32))
    assert kspace_downsample(x.astype(np.int16), 2).shape == (2, 3, 3)
    c = np.full((9, 8, 7), 5.0)
    np.testing.assert_allclose(kspace_downsample(c, 4), 5.0, atol=1e-5)
