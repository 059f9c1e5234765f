"""SIREN (Sitzmann et al. 2020): sine layers + a linear head, and cell-centred grid coordinates.

``Siren(hidden=sn, layers=3, omega0=30)`` maps (N, 3) coordinates in [-1, 1] to (N, 1) values:
``layers`` sine layers ``sin(omega0 * (W x + b))`` of ``hidden`` neurons, then ``Linear(hidden, 1)``.
Initialisation as in the SIREN paper: first layer ``W ~ U(-1/in, 1/in)``, later layers and the head
``W ~ U(-sqrt(6/in)/omega0, +sqrt(6/in)/omega0)``; biases keep torch's default.

Parameters: ``4*sn + (layers-1)*(sn^2 + sn) + sn + 1`` (= ``2*sn^2 + 7*sn + 1`` for 3 layers).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def siren_params(sn: int, layers: int = 3) -> int:
    return 4 * sn + (layers - 1) * (sn * sn + sn) + sn + 1


def grid_coords(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """(prod(shape), 3) cell-centred coordinates in [-1, 1]: voxel i of n sits at (2i + 1)/n - 1.
    Row order is C order over ``shape`` (matches ``array.reshape(-1)``)."""
    axes = [(2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1 for n in shape]
    g = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([a.reshape(-1) for a in g], dim=1)


def index_coords(flat: torch.Tensor, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Cell-centred coordinates of C-order flat indices ``flat`` into a grid of ``shape``."""
    n0, n1, n2 = (int(s) for s in shape)
    i2 = flat % n2
    i1 = (flat // n2) % n1
    i0 = flat // (n1 * n2)
    idx = torch.stack([i0, i1, i2], dim=1).to(dtype)
    size = torch.tensor([n0, n1, n2], dtype=dtype, device=flat.device)
    return (2 * idx + 1) / size - 1


class SineLayer(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, omega0: float, first: bool):
        super().__init__()
        self.omega0 = float(omega0)
        self.linear = nn.Linear(fan_in, fan_out)
        bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / self.omega0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * self.linear(x))


class Siren(nn.Module):
    def __init__(self, hidden: int = 30, layers: int = 3, omega0: float = 30.0, in_dim: int = 3, out_dim: int = 1):
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError("SIREN needs at least one layer of at least one neuron")
        mods = [SineLayer(in_dim, hidden, omega0, first=True)]
        mods += [SineLayer(hidden, hidden, omega0, first=False) for _ in range(layers - 1)]
        self.body = nn.Sequential(*mods)
        self.head = nn.Linear(hidden, out_dim)
        bound = math.sqrt(6.0 / hidden) / float(omega0)
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords))


class BlockSiren(nn.Module):
    """``nblocks`` independent SIRENs evaluated at once: weights carry a leading block axis and each
    layer is one batched matmul (``torch.baddbmm``), not a Python loop over blocks.

    Parameters (one tensor each, stored as such): ``w0`` (B, hidden, 3), ``b0`` (B, hidden), ...,
    ``w{layers}`` (B, 1, hidden) and ``b{layers}`` (B, 1) for the linear head. Each block is
    initialised like :class:`Siren`. ``forward(sel, coords)`` evaluates blocks ``sel`` (indices into
    the block axis) at the same local coordinates ``coords`` (P, 3) and returns (len(sel), P).
    """

    def __init__(self, nblocks: int, hidden: int = 30, layers: int = 3, omega0: float = 30.0, in_dim: int = 3):
        super().__init__()
        self.omega0, self.layers = float(omega0), int(layers)
        dims = [in_dim] + [hidden] * layers + [1]
        for i in range(layers + 1):
            fan_in, fan_out = dims[i], dims[i + 1]
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.omega0
            w = torch.empty(nblocks, fan_out, fan_in).uniform_(-bound, bound)
            bb = 1.0 / math.sqrt(fan_in)   # torch's default Linear bias init
            b = torch.empty(nblocks, fan_out).uniform_(-bb, bb)
            setattr(self, f"w{i}", nn.Parameter(w))
            setattr(self, f"b{i}", nn.Parameter(b))

    def forward(self, sel: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        n = sel.shape[0]
        h = coords.unsqueeze(0).expand(n, -1, -1)
        for i in range(self.layers + 1):
            w, b = getattr(self, f"w{i}")[sel], getattr(self, f"b{i}")[sel]
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if i < self.layers:
                h = torch.sin(self.omega0 * h)
        return h[..., 0]
