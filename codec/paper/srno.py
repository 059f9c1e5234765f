"""A small 3D super-resolution neural operator (after SRNO, Wei & Zhang, CVPR 2023), decoding a
low-res volume at any output size.

Pipeline for one low-res volume ``lr`` (shape ``m``) and HR query points ``q`` (N, 3) in [-1, 1]:

1. **Encoder** (run once on the low-res grid): ``Conv3d(1, NC, 3)`` -> ``res_blocks`` EDSR
   residual blocks (conv-ReLU-conv, residual scale 1) -> ``Conv3d(NC, NC, 3)`` + long skip.
   Features stay at low resolution (no sub-pixel tail), so the parameter count does not depend
   on the downsampling factor.
2. **Local ensemble**: for each query the 8 surrounding low-res cell centres (clamped at the
   border). Each neighbour becomes a token ``[feature (NC), rel (3), cell (3)]`` where ``rel`` is
   the query minus the neighbour's centre in low-res cell units and ``cell`` is the output voxel
   size in low-res cell units (``m / n_out`` per axis); its weight is the trilinear weight
   ``prod_axis(t or 1 - t)``. Tokens are lifted to ``attn_width`` by a linear layer.
3. **Galerkin attention over the 8 tokens of each query** (softmax-free; LayerNorm on K and V per
   head): ``A = sum_t w_t k_t^T v_t`` (the kernel integral with the trilinear weights as quadrature
   weights), ``x <- x + q A``, then ``x <- x + FFN(x)``. Attention is *local*: a query's output
   depends only on its own neighbourhood, so decoding in chunks equals decoding all at once, and
   since a neighbour enters everything scaled by its weight, the output stays continuous where
   the neighbour set changes (at low-res cell centres).
4. **Head**: ``h = sum_t w_t x_t`` -> ``Linear(width, mlp_width)`` -> GELU -> ``Linear(mlp_width, 1)``,
   plus a **trilinear skip**: the trilinear interpolation of ``lr`` at the query.

Parameter count (``R`` res blocks, ``B`` attention blocks, width ``w``, head width ``h``)::

    (27 + 54 R) NC^2 + (29 + 2 R) NC  +  (NC + 7) w  +  B (5 w^2 + 9 w)  +  h (w + 2) + 1

**Two implementations of the query, one function.** :meth:`SRNO3D.query_reference` is the plain
formulation above, used for training (autograd) and on GPUs. :meth:`SRNO3D.query_fast` computes the
same values on the CPU without autograd (decoding), several times faster: sub-chunks of
``FAST_CHUNK`` queries whose activations stay in the CPU cache; neighbour indices, offsets and
weights computed per axis (3 x 2 values per query instead of 8 x 3); the cell-size columns of the
lift folded into its bias; q, k, v channel-first, so the per-head LayerNorms are plain row
operations instead of norms over 8 values per token; ``k^T v`` of all heads in one batched matmul
with the cross-head blocks zeroed (exact zeros: the per-head products are unchanged) and ``q A``
written straight in token-major order (no permuted copies). It agrees with the reference to float32
rounding (about 1e-6 on [0, 1] data; ``tests/codec/test_srno.py``). :meth:`SRNO3D.query` picks the
fast one when autograd is off and the inputs are on the CPU (``FAST_CPU = False`` turns this off).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def srno_params(nc: int, res_blocks: int = 2, width: int = 16, blocks: int = 2, mlp_width: int = 32) -> int:
    enc = (27 + 54 * res_blocks) * nc * nc + (29 + 2 * res_blocks) * nc
    return enc + (nc + 7) * width + blocks * (5 * width * width + 9 * width) + mlp_width * (width + 2) + 1


class ResBlock(nn.Module):
    def __init__(self, nc: int):
        super().__init__()
        self.c1 = nn.Conv3d(nc, nc, 3, padding=1)
        self.c2 = nn.Conv3d(nc, nc, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


class Encoder(nn.Module):
    def __init__(self, nc: int, res_blocks: int):
        super().__init__()
        self.head = nn.Conv3d(1, nc, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(nc) for _ in range(res_blocks)], nn.Conv3d(nc, nc, 3, padding=1))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """lr (m0, m1, m2) -> features (m0*m1*m2, NC), C order."""
        h = self.head(lr[None, None])
        f = self.body(h) + h
        return f[0].flatten(1).t()


class GalerkinBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads, self.hd = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.k_norm = nn.LayerNorm(self.hd, elementwise_affine=False)
        self.v_norm = nn.LayerNorm(self.hd, elementwise_affine=False)
        # per-head affine parameters of the two LayerNorms (as in Galerkin transformer / SRNO)
        self.k_w = nn.Parameter(torch.ones(heads, self.hd))
        self.k_b = nn.Parameter(torch.zeros(heads, self.hd))
        self.v_w = nn.Parameter(torch.ones(heads, self.hd))
        self.v_b = nn.Parameter(torch.zeros(heads, self.hd))
        self.ffn1 = nn.Linear(width, width)
        self.ffn2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (N, T, width) tokens, w (N, T) quadrature weights summing to 1 per query."""
        n, t, c = x.shape
        h, d = self.heads, self.hd
        # (3, N*H, T, d): one copy, then batched matmuls over tiny (T x d) blocks
        q, k, v = self.qkv(x).view(n, t, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, n * h, t, d).unbind(0)
        k = (self.k_norm(k).view(n, h, t, d) * self.k_w[:, None] + self.k_b[:, None]).view(n * h, t, d)
        v = (self.v_norm(v).view(n, h, t, d) * self.v_w[:, None] + self.v_b[:, None]).view(n * h, t, d)
        kw = k * w.repeat_interleave(h, dim=0)[:, :, None]
        a = torch.bmm(kw.transpose(1, 2), v)                      # (N*H, d, d)
        att = torch.bmm(q, a).view(n, h, t, d).transpose(1, 2).reshape(n, t, c)
        x = x + att
        return x + self.ffn2(F.gelu(self.ffn1(x)))


#: use :meth:`SRNO3D.query_fast` for CPU queries without autograd (decoding)
FAST_CPU = True
#: queries per sub-chunk of the fast path: the activations (16 floats x 8 tokens x 2048 queries = 1 MiB)
#: stay in a core's L2 cache; the best of 1024-8192 measured with benchmarks/srno_throughput.py
FAST_CHUNK = 2048


class _FastBlock:
    """One :class:`GalerkinBlock` for :meth:`SRNO3D.query_fast`: x (8n, width) token-major, w (8n,).

    q, k, v come out of the qkv matmul channel-first (3 width, 8n), so the per-head LayerNorms are
    reductions over rows; ``A`` is computed for all heads at once (width x width per query) with the
    cross-head blocks set to zero, so ``q A`` adds exactly the per-head products."""

    def __init__(self, blk: GalerkinBlock):
        h, d = blk.heads, blk.hd
        self.h, self.d, self.c = h, d, h * d
        self.qkv_w, self.qkv_b = blk.qkv.weight, blk.qkv.bias[:, None]
        self.k_eps, self.v_eps = float(blk.k_norm.eps), float(blk.v_norm.eps)
        self.k_w, self.k_b = blk.k_w[:, :, None], blk.k_b[:, :, None]
        self.v_w, self.v_b = blk.v_w[:, :, None], blk.v_b[:, :, None]
        self.f1_w, self.f1_b = blk.ffn1.weight.t(), blk.ffn1.bias
        self.f2_w, self.f2_b = blk.ffn2.weight.t(), blk.ffn2.bias
        # all heads in one (width x width) product per query while that is small; per head otherwise
        self.joint = self.c <= 32
        self.mask = (torch.block_diag(*[torch.ones(d, d, dtype=blk.k_w.dtype, device=blk.k_w.device)] * h)
                     if self.joint and h > 1 else None)

    def __call__(self, x: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
        h, d, c = self.h, self.d, self.c
        r = 8 * n
        y = torch.addmm(self.qkv_b, self.qkv_w, x.t())            # (3c, 8n) channel-first
        k, v = y[c:2 * c].view(h, d, r), y[2 * c:].view(h, d, r)
        kc = k - k.mean(dim=1, keepdim=True)                        # LayerNorm over each head's d rows
        rk = kc.square().mean(dim=1, keepdim=True).add_(self.k_eps).rsqrt_()
        kc.mul_(rk * w).mul_(self.k_w).addcmul_(self.k_b, w)       # (LN(k) k_w + k_b) * w
        vc = v - v.mean(dim=1, keepdim=True)
        rv = vc.square().mean(dim=1, keepdim=True).add_(self.v_eps).rsqrt_()
        vc.mul_(rv).mul_(self.v_w).add_(self.v_b)
        xv = x.view(n, 8, c)
        if self.joint:
            a = torch.bmm(kc.view(c, n, 8).permute(1, 0, 2), vc.view(c, n, 8).permute(1, 2, 0))   # (n, c, c)
            if self.mask is not None:
                a.mul_(self.mask)
            xv += torch.bmm(y[:c].view(c, n, 8).permute(1, 2, 0), a)          # q A: (n, 8, c)
        else:
            for i in range(h):
                a = torch.bmm(kc[i].view(d, n, 8).permute(1, 0, 2), vc[i].view(d, n, 8).permute(1, 2, 0))
                xv[:, :, i * d:(i + 1) * d] += torch.bmm(y[i * d:(i + 1) * d].view(d, n, 8).permute(1, 2, 0), a)
        g = F.gelu(torch.addmm(self.f1_b, x, self.f1_w))
        return torch.addmm(x, g, self.f2_w).add_(self.f2_b)


_CORNERS = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.long)


def neighbours(coords: torch.Tensor, lr_shape: Sequence[int]):
    """For (N, 3) coords in [-1, 1]: flat indices (N, 8) of the 8 surrounding low-res cell centres
    (clamped), rel offsets (N, 8, 3) in low-res cell units, trilinear weights (N, 8)."""
    m = torch.tensor([int(s) for s in lr_shape], device=coords.device, dtype=coords.dtype)
    u = (coords + 1) * 0.5 * m - 0.5
    i0 = torch.floor(u)
    t = u - i0
    corners = _CORNERS.to(coords.device)
    idx = (i0.long()[:, None, :] + corners[None]).clamp(min=torch.zeros(3, dtype=torch.long, device=coords.device),
                                                         max=(m.long() - 1))
    centre = (2 * idx.to(coords.dtype) + 1) / m - 1
    rel = (coords[:, None, :] - centre) * (m * 0.5)
    cf = corners[None].to(coords.dtype)
    w = (cf * t[:, None, :] + (1 - cf) * (1 - t[:, None, :])).prod(dim=2)
    m1, m2 = int(lr_shape[1]), int(lr_shape[2])
    flat = (idx[..., 0] * m1 + idx[..., 1]) * m2 + idx[..., 2]
    return flat, rel, w


class SRNO3D(nn.Module):
    def __init__(self, nc: int = 4, res_blocks: int = 2, width: int = 16, heads: int = 2, blocks: int = 2,
                 mlp_width: int = 32):
        super().__init__()
        self.encoder = Encoder(nc, res_blocks)
        self.lift = nn.Linear(nc + 6, width)
        self.blocks = nn.ModuleList([GalerkinBlock(width, heads) for _ in range(blocks)])
        self.fc1 = nn.Linear(width, mlp_width)
        self.fc2 = nn.Linear(mlp_width, 1)

    def query(self, feat: torch.Tensor, lr_flat: torch.Tensor, lr_shape: Sequence[int], coords: torch.Tensor,
              out_shape: Sequence[int]) -> torch.Tensor:
        """Values (N,) at ``coords`` (N, 3) of an output grid ``out_shape``, from encoder features
        ``feat`` (M, NC) and the flat low-res volume ``lr_flat`` (M,). Runs :meth:`query_fast` on the
        CPU when autograd is off, else :meth:`query_reference` (the same values)."""
        if FAST_CPU and not torch.is_grad_enabled() and coords.device.type == "cpu" and feat.device.type == "cpu":
            return self.query_fast(feat, lr_flat, lr_shape, coords, out_shape)
        return self.query_reference(feat, lr_flat, lr_shape, coords, out_shape)

    def query_reference(self, feat: torch.Tensor, lr_flat: torch.Tensor, lr_shape: Sequence[int],
                        coords: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
        """The plain formulation (module docstring, steps 2-4): differentiable, any device."""
        flat, rel, w = neighbours(coords, lr_shape)
        n = coords.shape[0]
        cell = torch.tensor([float(a) / float(b) for a, b in zip(lr_shape, out_shape)],
                            device=coords.device, dtype=coords.dtype).expand(n, 8, 3)
        tok = torch.cat([feat[flat], rel, cell], dim=2)
        x = self.lift(tok)
        for blk in self.blocks:
            x = blk(x, w)
        h = (x * w[..., None]).sum(dim=1)
        skip = (lr_flat[flat] * w).sum(dim=1)
        return self.fc2(F.gelu(self.fc1(h)))[:, 0] + skip

    @torch.no_grad()
    def query_fast(self, feat: torch.Tensor, lr_flat: torch.Tensor, lr_shape: Sequence[int], coords: torch.Tensor,
                   out_shape: Sequence[int], chunk: int | None = None) -> torch.Tensor:
        """:meth:`query_reference`'s values for decoding on the CPU (no autograd; see the module
        docstring). ``chunk``: queries per sub-chunk (default ``FAST_CHUNK``); the values do not
        depend on it."""
        chunk = max(1, int(FAST_CHUNK if chunk is None else chunk))
        nc = feat.shape[1]
        feat_t = feat.t()                       # (NC, M): the encoder's own layout, no copy
        if not feat_t.is_contiguous():
            feat_t = feat_t.contiguous()
        dt = coords.dtype
        cell = torch.tensor([float(a) / float(b) for a, b in zip(lr_shape, out_shape)], dtype=dt)
        lw = self.lift.weight
        lift_w = lw[:, :nc + 3].t()                         # feature and offset columns
        lift_b = self.lift.bias + lw[:, nc + 3:] @ cell     # the cell columns: the same for every token
        blocks = [_FastBlock(b) for b in self.blocks]
        fc1_w, fc2_w = self.fc1.weight.t(), self.fc2.weight.t()
        m = [int(v) for v in lr_shape]
        m_f = torch.tensor([float(v) for v in m], dtype=dt)
        m_hi = torch.tensor([v - 1 for v in m])[None, :, None]
        out = coords.new_empty(coords.shape[0])     # a normal tensor: callers may use it in autograd later
        with torch.inference_mode():                # ~10 % less per-operation overhead than no_grad
            for s in range(0, coords.shape[0], chunk):
                c = coords[s:s + chunk]
                n = c.shape[0]
                r = 8 * n
                # the arithmetic of neighbours(), per axis: (n, 3, 2) values instead of (n, 8, 3)
                u = (c + 1) * 0.5 * m_f - 0.5
                i0 = torch.floor(u)
                t = u - i0
                il = i0.long()
                idx = torch.minimum(torch.stack([il, il + 1], dim=2).clamp_(min=0), m_hi)
                centre = (2 * idx.to(dt) + 1) / m_f[None, :, None] - 1
                rel = (c[:, :, None] - centre) * (m_f * 0.5)[None, :, None]
                wa = torch.stack([1 - t, t], dim=2)
                flat = ((idx[:, 0, :, None, None] * m[1] + idx[:, 1, None, :, None]) * m[2]
                        + idx[:, 2, None, None, :]).reshape(r)
                w = (wa[:, 0, :, None, None] * wa[:, 1, None, :, None] * wa[:, 2, None, None, :]).reshape(r)
                # tokens channel-first (NC + 3, n, 2, 2, 2) -> lifted, token-major x (8n, width)
                tok = torch.empty(nc + 3, n, 2, 2, 2, dtype=dt)
                torch.index_select(feat_t, 1, flat, out=tok[:nc].view(nc, r))
                tok[nc].copy_(rel[:, 0, :, None, None].expand(n, 2, 2, 2))
                tok[nc + 1].copy_(rel[:, 1, None, :, None].expand(n, 2, 2, 2))
                tok[nc + 2].copy_(rel[:, 2, None, None, :].expand(n, 2, 2, 2))
                x = torch.addmm(lift_b, tok.view(nc + 3, r).t(), lift_w)
                for fb in blocks:
                    x = fb(x, w, n)
                h = torch.bmm(w.view(n, 1, 8), x.view(n, 8, -1))[:, 0]
                y = torch.addmm(self.fc2.bias, F.gelu(torch.addmm(self.fc1.bias, h, fc1_w)), fc2_w)[:, 0]
                y += (lr_flat[flat].view(n, 8) * w.view(n, 8)).sum(dim=1)
                out[s:s + n] = y
        return out

    def forward(self, lr: torch.Tensor, coords: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
        return self.query(self.encoder(lr), lr.reshape(-1), lr.shape, coords, out_shape)
