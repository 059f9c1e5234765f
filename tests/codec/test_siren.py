import math

import numpy as np
import torch

from inrv.codec.siren import Siren, grid_coords, index_coords, siren_params


def test_param_formula():
    for sn in (1, 30, 57, 230):
        for layers in (1, 3, 5):
            assert sum(p.numel() for p in Siren(sn, layers).parameters()) == siren_params(sn, layers)
    assert siren_params(30) == 2 * 30**2 + 7 * 30 + 1


def test_coordinates_are_cell_centred():
    c = grid_coords((4, 2, 1))
    assert c.shape == (8, 3)
    np.testing.assert_allclose(sorted(set(c[:, 0].tolist())), [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(sorted(set(c[:, 1].tolist())), [-0.5, 0.5])
    assert set(c[:, 2].tolist()) == {0.0}
    idx = torch.tensor([0, 3, 7, 5])
    np.testing.assert_allclose(index_coords(idx, (4, 2, 1)), c[idx])


def test_init_follows_sitzmann():
    s = Siren(40, 3, omega0=30.0)
    w0 = s.body[0].linear.weight
    w1 = s.body[1].linear.weight
    assert w0.abs().max() <= 1 / 3 and w0.abs().max() > 0.2
    assert w1.abs().max() <= math.sqrt(6 / 40) / 30 + 1e-7


def test_fits_a_simple_3d_function():
    torch.manual_seed(0)
    shape = (12, 12, 12)
    c = grid_coords(shape)
    target = (torch.sin(3 * c[:, 0]) * torch.cos(2 * c[:, 1]) + 0.5 * c[:, 2] ** 2)[:, None]
    net = Siren(32, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = ((net(c) - target) ** 2).mean()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    final = ((net(c) - target) ** 2).mean().item()
    assert final < first / 50 and final < 1e-3
