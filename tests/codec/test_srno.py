import pytest
import torch

from inrv.codec.siren import grid_coords
from inrv.codec.srno import SRNO3D, neighbours, srno_params


@pytest.mark.parametrize("nc,res,width,heads,blocks,mlp", [(4, 2, 16, 2, 2, 32), (8, 2, 16, 2, 2, 32),
                                                           (16, 2, 16, 2, 2, 32), (3, 1, 12, 3, 1, 7)])
def test_param_formula(nc, res, width, heads, blocks, mlp):
    m = SRNO3D(nc, res, width, heads, blocks, mlp)
    assert sum(p.numel() for p in m.parameters()) == srno_params(nc, res, width, blocks, mlp)


def test_trilinear_weights_and_offsets():
    lr_shape = (4, 5, 6)
    c = torch.rand(200, 3) * 1.4 - 0.7  # inside the outermost low-res cell centres (+-0.75 for 4 cells)
    flat, rel, w = neighbours(c, lr_shape)
    assert flat.shape == (200, 8) and rel.shape == (200, 8, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(200))
    assert (w >= 0).all() and (rel.abs() <= 1 + 1e-5).all()
    # interpolating a linear function of the low-res cell centres is exact away from the border
    lc = grid_coords(lr_shape)
    f = lc @ torch.tensor([1.0, -2.0, 0.5]) + 3
    torch.testing.assert_close((f[flat] * w).sum(1), c @ torch.tensor([1.0, -2.0, 0.5]) + 3, atol=1e-5, rtol=0)
    # a query on a low-res cell centre takes that cell with weight 1
    flat, rel, w = neighbours(lc[7:8], lr_shape)
    assert flat[0, w[0].argmax()] == 7 and float(w.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("out_shape", [(8, 10, 12), (5, 3, 7), (16, 20, 24), (1, 1, 1)])
def test_any_output_shape_and_chunking_invariance(out_shape):
    torch.manual_seed(0)
    m = SRNO3D(4, width=8, heads=2)
    lr = torch.randn(4, 5, 6)
    c = grid_coords(out_shape)
    with torch.no_grad():
        full = m(lr, c, out_shape)
        parts = torch.cat([m(lr, c[i:i + 7], out_shape) for i in range(0, len(c), 7)])
        shuffled = torch.randperm(len(c))
        sh = m(lr, c[shuffled], out_shape)
    assert full.shape == (len(c),)
    torch.testing.assert_close(parts, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sh, full[shuffled], atol=1e-6, rtol=1e-5)


def test_gradients_reach_the_low_res_input():
    m = SRNO3D(4, width=8)
    lr = torch.randn(3, 3, 3, requires_grad=True)
    m(lr, torch.rand(50, 3) * 2 - 1, (6, 6, 6)).sum().backward()
    assert lr.grad is not None and lr.grad.abs().sum() > 0
