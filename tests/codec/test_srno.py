import math

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


def _random_srno(seed, nc, width, heads, blocks, mlp=16):
    """An SRNO with random weights, the LayerNorm affines included (they start at 1 and 0), whose
    outputs stay of order 1 like decoded [0, 1] data."""
    torch.manual_seed(seed)
    m = SRNO3D(nc, 1, width, heads, blocks, mlp)
    with torch.no_grad():
        for blk in m.blocks:
            for p in (blk.k_w, blk.k_b, blk.v_w, blk.v_b):
                p.add_(0.5 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("nc,width,heads,blocks", [(4, 16, 2, 2), (3, 12, 3, 1), (2, 8, 1, 2), (4, 48, 2, 1)])
@pytest.mark.parametrize("lr_shape,out_shape", [((5, 7, 3), (11, 9, 13)), ((4, 5, 6), (8, 10, 12)),
                                                ((3, 1, 4), (7, 2, 9.5))])
def test_fast_query_equals_reference(nc, width, heads, blocks, lr_shape, out_shape):
    """The decoding path (query_fast) computes the training path's function: odd sizes, non-integer
    scales (and a fractional output size, as windowed decoding passes), joint and per-head attention
    (width 48 > 32 takes the per-head loop), points outside the outermost cell centres, any sub-chunk."""
    m = _random_srno(1, nc, width, heads, blocks)
    lr = torch.rand(lr_shape)
    g = grid_coords([int(math.ceil(s)) for s in out_shape])
    c = torch.cat([g, torch.rand(300, 3) * 2.2 - 1.1])          # beyond [-1, 1] too: clamped neighbours
    with torch.no_grad():
        feat = m.encoder(lr)
        ref = m.query_reference(feat, lr.reshape(-1), lr_shape, c, out_shape)
        fast = m.query_fast(feat, lr.reshape(-1), lr_shape, c, out_shape)
        small = m.query_fast(feat, lr.reshape(-1), lr_shape, c, out_shape, chunk=7)
        dispatched = m.query(feat, lr.reshape(-1), lr_shape, c, out_shape)
    assert ref.abs().max() > 0.1                                 # not a degenerate all-zero network
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(small, fast, atol=1e-6, rtol=1e-6)
    assert torch.equal(dispatched, fast)
    assert not fast.is_inference()                              # usable anywhere afterwards, autograd included


def test_query_uses_reference_path_under_autograd(monkeypatch):
    """With autograd on, query is the differentiable reference (training); its gradient reaches the
    weights and equals the one of query_reference."""
    m = _random_srno(2, 4, 16, 2, 2)
    lr = torch.rand(3, 4, 5)
    c = torch.rand(40, 3) * 2 - 1
    called = []
    monkeypatch.setattr(SRNO3D, "query_fast", lambda *a, **k: called.append(1))
    m(lr, c, (7, 8, 9)).sum().backward()
    assert not called
    g = m.blocks[0].k_w.grad.clone()
    m.zero_grad()
    m.query_reference(m.encoder(lr), lr.reshape(-1), lr.shape, c, (7, 8, 9)).sum().backward()
    assert g.abs().sum() > 0 and torch.equal(g, m.blocks[0].k_w.grad)


def test_decode_workers_fill_the_same_values():
    """paper._query_range with 2 worker threads writes what one thread writes, chunk for chunk, and
    leaves the caller's torch thread count as it was."""
    import contextlib

    import numpy as np

    from inrv.codec import paper

    m = _random_srno(3, 4, 16, 2, 2)
    net = torch.nn.Module()
    net.srno = m
    lr_shape, out_shape = (4, 5, 6), (9, 10, 11)
    lr = torch.rand(lr_shape)
    with torch.no_grad():
        feat = m.encoder(lr)
    outs = []
    for workers in (1, 2):
        o = np.full(9 * 10 * 11, np.nan, np.float32)
        paper._query_range(net, feat, lr.reshape(-1), 0, 4, lr_shape, out_shape, 13, 900, o, torch.device("cpu"),
                           64, contextlib.nullcontext(), workers)
        outs.append(o)
        assert torch.get_num_threads() == 1
    assert np.isnan(outs[1][:13]).all() and np.isnan(outs[1][900:]).all()
    np.testing.assert_array_equal(outs[0], outs[1])
    with torch.no_grad():
        ref = m.query_reference(feat, lr.reshape(-1), lr_shape, grid_coords(out_shape)[13:900], out_shape)
    np.testing.assert_allclose(outs[1][13:900], ref.numpy(), atol=1e-5, rtol=1e-5)
