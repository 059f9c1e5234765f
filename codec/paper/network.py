"""The paper model's network (:class:`PaperNet`: SIREN(s) -> SRNO) and its size in closed form."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import PaperConfig
from .partition import Partition
from .siren import BlockSiren, Siren, grid_coords, siren_params
from .srno import SRNO3D, srno_params


class PaperNet(nn.Module):
    """SIREN(s) on the low-res grid -> the shared 3D SRNO; with a multi-block ``part`` the SIREN is a
    :class:`~inrv.codec.paper.siren.BlockSiren`, one network per active block."""

    def __init__(self, cfg: PaperConfig, part: Partition | None = None):
        super().__init__()
        self.part = part if part is not None and not part.legacy else None
        if self.part is None:
            self.siren = Siren(cfg.sn, cfg.siren_layers, cfg.omega0)
        else:
            p = self.part
            self.bsiren = BlockSiren(int(p.active.sum()), cfg.sn, cfg.siren_layers, cfg.omega0)
            slot = np.full(p.nblocks, -1, np.int64)
            slot[p.active] = np.arange(int(p.active.sum()))
            self.register_buffer("slot", torch.from_numpy(slot), persistent=False)
            self.register_buffer("const", torch.from_numpy(p.const.copy()), persistent=False)
            self.register_buffer("bcoords", grid_coords(p.bl), persistent=False)
        self.srno = SRNO3D(cfg.nc, cfg.res_blocks, cfg.attn_width, cfg.attn_heads, cfg.attn_blocks, cfg.mlp_width)

    def lowres(self, lr_coords: torch.Tensor, lr_shape) -> torch.Tensor:
        """Single-SIREN network: the latent low-res volume at ``lr_coords``."""
        return self.siren(lr_coords).reshape(tuple(lr_shape))

    def lowres_rows(self, e0: int, e1: int, lr_shape) -> torch.Tensor:
        """Latent low-res rows ``e0:e1`` (axis 0) of the whole grid ``lr_shape``."""
        if self.part is None:
            m = tuple(int(v) for v in lr_shape)
            dev = next(self.parameters()).device
            if e0 == 0 and e1 == m[0]:
                return self.lowres(grid_coords(m, device=dev), m)
            c = grid_coords((e1 - e0, m[1], m[2]), device=dev)   # rows e0:e1 in whole-grid units
            c[:, 0] = (c[:, 0] + 1) * ((e1 - e0) / m[0]) + (2 * e0 / m[0] - 1)
            return self.lowres(c, (e1 - e0, m[1], m[2]))
        p = self.part
        (b0, b1, b2), (g0, g1, g2) = p.bl, p.grid
        r0, r1 = e0 // b0, -(-e1 // b0)
        ids = torch.arange(r0 * g1 * g2, r1 * g1 * g2, device=self.slot.device)
        slot = self.slot[ids]
        vals = self.const[ids][:, None].expand(len(ids), self.bcoords.shape[0])
        act = slot >= 0
        if bool(act.any()):
            out = self.bsiren(slot[act], self.bcoords)        # (nact, cells)
            vals = vals.clone()
            vals[act] = out.to(vals.dtype)
        z = vals.reshape(r1 - r0, g1, g2, b0, b1, b2).permute(0, 3, 1, 4, 2, 5)
        z = z.reshape((r1 - r0) * b0, g1 * b1, g2 * b2)
        return z[e0 - r0 * b0:e1 - r0 * b0, :p.lr_shape[1], :p.lr_shape[2]]

    def forward(self, lr_coords, lr_shape, coords, out_shape):
        """(latent low-res volume, decoded values at ``coords``)."""
        z = self.lowres(lr_coords, lr_shape) if self.part is None else self.lowres_rows(0, lr_shape[0], lr_shape)
        return z, self.srno(z, coords, out_shape)


def _build(cfg: PaperConfig, part: Partition | None = None) -> PaperNet:
    """The network for ``cfg`` (and block partition ``part``)."""
    return PaperNet(cfg, part)


def count_params(cfg: PaperConfig, sirens: int = 1) -> int:
    """Total parameters of ``sirens`` SIRENs (one per active block) + SRNO for ``cfg`` (closed form,
    see siren.py / srno.py)."""
    return sirens * siren_params(cfg.sn, cfg.siren_layers) + srno_params(cfg.nc, cfg.res_blocks, cfg.attn_width,
                                                                 cfg.attn_blocks, cfg.mlp_width)
