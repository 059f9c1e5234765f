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
        ``feat`` (M, NC) and the flat low-res volume ``lr_flat`` (M,)."""
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

    def forward(self, lr: torch.Tensor, coords: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
        return self.query(self.encoder(lr), lr.reshape(-1), lr.shape, coords, out_shape)
