"""The synthesis: upsampled latents -> intensity (:class:`Synthesis`), the slab input with its halo,
and the row windows a slab step reads."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from .config import LatentConfig
from .background import expand_blocks
from .grids import _interp, _interp_cubic, up_cubic_torch, up_torch


class Synthesis(nn.Module):
    """Latent values -> one intensity (on [0, 1]) per voxel, with a small spatial footprint.

    A final convolution (``skip``, ``kernel`` 3 or 5) to one channel over two groups of inputs: the
    ``L*C`` upsampled latent channels (a *linear* path, initialised to pick the centre voxel with a
    weight ``delta`` per level, i.e. a Laplacian-pyramid sum; training turns it into learned
    synthesis filters) and ``conv_ch`` *non-linear* channels from a per-voxel MLP (``layers``
    hidden ReLU layers of ``width``; their weights in ``skip`` start at zero). With ``convs=2`` the
    MLP channels first pass one more 3x3x3 ReLU convolution (``mid``). The input must carry a halo
    of ``self.halo`` voxels on every side (``kernel // 2``, plus 1 with ``mid``; see
    :func:`_synth_input`).
    """

    HALO = 1    # halo of the default architecture (instances: ``self.halo``)

    def __init__(self, n_in: int, width: int, layers: int, conv_ch: int, kernel: int = 3, convs: int = 1):
        super().__init__()
        if kernel not in (3, 5) or convs not in (1, 2):
            raise InputError(f"unsupported synthesis (kernel {kernel}, convolutions {convs})")
        mods: list[nn.Module] = []
        d = n_in
        for _ in range(layers):
            mods += [nn.Linear(d, width), nn.ReLU()]
            d = width
        mods += [nn.Linear(d, conv_ch), nn.ReLU()]
        self.net = nn.Sequential(*mods)
        self.n_in = n_in
        self.kernel = kernel
        # optional extra 3x3x3 ReLU convolution on the MLP channels (a wider non-linear footprint)
        self.mid = nn.Conv3d(conv_ch, conv_ch, 3) if convs == 2 else None
        self.halo = kernel // 2 + (1 if convs == 2 else 0)
        # one convolution over [latent channels, MLP channels] (both paths at once: faster on CPU)
        self.skip = nn.Conv3d(n_in + conv_ch, 1, kernel)
        with torch.no_grad():
            self.skip.weight.zero_()
            self.skip.bias.fill_(0.5)

    def centre(self) -> int:
        """Index of the centre tap of the final convolution (for the pyramid initialisation)."""
        return self.kernel // 2

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # feats: (F, a+2h, b+2h, c+2h) -> (a, b, c). Channels-first matmuls: (W, F) @ (F, n).
        h = feats.flatten(1)
        for m in self.net:
            h = h.relu_() if isinstance(m, nn.ReLU) else torch.addmm(m.bias[:, None], m.weight, h)
        h = h.reshape((-1,) + feats.shape[1:])
        if self.mid is not None:
            h = torch.relu(self.mid(h[None]))[0]
            feats = feats[:, 1:-1, 1:-1, 1:-1]
        z = torch.cat([feats, h], 0)[None]
        if z.device.type == "cpu":
            # oneDNN's 3D convolution backward is ~1.3x faster channels-last on a CPU
            z = z.contiguous(memory_format=torch.channels_last_3d)
        return self.skip(z)[0, 0]


# with a background mask, rows are synthesised in chunks of this many rows, each in the box of its
# foreground only (training and decoding): on mni_t1 (24 % foreground) 45 % of the voxels of a
# whole-plane synthesis (67 % with one box per 95-row slab; thinner chunks pay more halo again)
FG_CHUNK = 16


def fg_box(fg: np.ndarray):
    """``(b0, b1, c0, c1)``: the smallest box of columns holding every True voxel of ``fg`` (rows, b, c),
    or None when there is none."""
    plane = fg.any(axis=0)
    bs, cs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if len(bs) == 0:
        return None
    return int(bs[0]), int(bs[-1]) + 1, int(cs[0]), int(cs[-1]) + 1


def crop(f: torch.Tensor, box, halo: int) -> torch.Tensor:
    """The synthesis input ``f`` (features, rows, b, c, with a halo of ``halo`` on every side) cut to
    the columns ``box = (b0, b1, c0, c1)`` of the output, halo included."""
    return f[:, :, box[0]:box[1] + 2 * halo, box[2]:box[3] + 2 * halo]


def _synth_input(qs, shape, r0: int, r1: int, upsample: str = "linear", halo: int = Synthesis.HALO,
                 win=None) -> torch.Tensor:
    """Upsampled latents for output rows ``[r0, r1)`` of axis 0 plus a halo of ``halo`` voxels
    (the synthesis' ``halo``): real neighbouring rows inside the volume, edge replication outside
    it (so a slab-by-slab render equals a whole-volume render). ``win`` (per level: full row count,
    first row held) when ``qs`` holds row windows of the levels (:func:`_row_windows`)."""
    h = halo
    lo, hi = max(0, r0 - h), min(shape[0], r1 + h)
    up = up_cubic_torch if upsample == "cubic" else up_torch
    win = win or [(None, 0)] * len(qs)
    f = torch.cat([up(q, shape, np.arange(lo, hi), n0, off) for q, (n0, off) in zip(qs, win)], 0)
    pad = (h, h, h, h, h - (r0 - lo), h - (hi - r1))
    return torch.nn.functional.pad(f[None], pad, mode="replicate")[0]


def _row_windows(shape, shapes, r0: int, r1: int, halo: int, upsample: str) -> list[tuple[int, int]]:
    """Row range ``[lo, hi)`` of every latent level that one slab step reads: the synthesis of output
    rows ``[r0, r1)`` (plus its halo), the training rate of the matching rows of every level (plus a
    row on each side) and the coarser rows those rates upsample. A step then soft-rounds, noises and
    differentiates only these rows, not every latent of a large volume (``rate_rows`` must match the
    rate's choice of rows in the fit)."""
    def src(n_in, n_out, lo, hi):          # rows of an n_in grid that an upsampling to rows [lo, hi) reads
        rows = np.arange(lo, hi)
        if upsample == "cubic":
            idx, _ = _interp_cubic(n_in, n_out, rows)
            return int(min(i.min() for i in idx)), int(max(i.max() for i in idx)) + 1
        i0, i1, _ = _interp(n_in, n_out, rows)
        return int(i0.min()), int(i1.max()) + 1

    L = len(shapes)
    lo_o, hi_o = max(0, r0 - halo), min(shape[0], r1 + halo)
    need = [list(src(shapes[k][0], shape[0], lo_o, hi_o)) for k in range(L)]
    for k in range(L):
        a, b = rate_rows(shape[0], shapes[k][0], r0, r1)
        lo_, hi_ = max(0, a - 1), min(shapes[k][0], b + 1)
        need[k] = [min(need[k][0], lo_), max(need[k][1], hi_)]
        if k + 1 < L:
            c0, c1 = src(shapes[k + 1][0], shapes[k][0], lo_, hi_)
            need[k + 1] = [min(need[k + 1][0], c0), max(need[k + 1][1], c1)]
    return [(lo, hi) for lo, hi in need]


def rate_rows(n: int, n0: int, r0: int, r1: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of a level of ``n0`` rows whose rate a slab step on output rows ``[r0, r1)``
    (of ``n``) counts: the level rows under the slab (the whole level if it has one row)."""
    if n0 == 1 or (r0 == 0 and r1 == n):
        return 0, n0
    a = min(n0 - 1, r0 * n0 // n)
    return a, max(a + 1, min(n0, -(-(r1 * n0) // n)))


def _make_synth(n_levels: int, cfg: LatentConfig) -> Synthesis:
    return Synthesis(n_levels * cfg.channels, cfg.synth_width, cfg.synth_layers, cfg.conv_channels,
                     cfg.synth_kernel, cfg.synth_convs)


def synthesise(ints, deq, cfg: LatentConfig, orig, bgb, bb: int, value_range, dev) -> np.ndarray:
    """Decoded integer latents + dequantised networks -> the volume in the original value range
    (float32, shape ``orig``), slab by slab; background blocks exactly at the minimum."""
    vshape = tuple(orig) + (1,) * (3 - len(orig))
    syn = _make_synth(len(ints), cfg)
    syn.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in deq.items() if k.startswith("syn.")})
    syn = syn.to(dev).eval()
    lat = [torch.as_tensor(i, dtype=torch.float32, device=dev) for i in ints]
    lo, hi = value_range
    span = hi - lo if hi > lo else 1.0
    out = np.empty(vshape, dtype=np.float32)
    rows_per = max(1, min(vshape[0], (1 << 21) // max(1, vshape[1] * vshape[2])))
    h = syn.halo
    with torch.no_grad():
        for r0 in range(0, vshape[0], rows_per):
            r1 = min(vshape[0], r0 + rows_per)
            if bgb is None:
                o = syn(_synth_input(lat, vshape, r0, r1, cfg.upsample, h)).cpu().numpy()
            else:
                # background blocks: exactly the minimum (0 on this scale), and not synthesised:
                # chunks of FG_CHUNK rows, each in the box of its foreground (as in training)
                bg = expand_blocks(bgb, bb, vshape, r0, r1)
                o = np.zeros(bg.shape, np.float32)
                for c0 in range(r0, r1, FG_CHUNK):
                    c1 = min(r1, c0 + FG_CHUNK)
                    box = fg_box(~bg[c0 - r0:c1 - r0])
                    if box is None:
                        continue
                    b0, b1, d0, d1 = box
                    f = crop(_synth_input(lat, vshape, c0, c1, cfg.upsample, h), box, h)
                    o[c0 - r0:c1 - r0, b0:b1, d0:d1] = syn(f).cpu().numpy()
                o[bg] = 0.0
            # back to the original range in float64, slab by slab (no volume-sized float64 array)
            out[r0:r1] = o.astype(np.float64) * span + lo
    return out.reshape(orig)
