"""The ``latent`` model family: coded multi-resolution latent grids + a tiny synthesis network.

In the spirit of Cool-chic / C3 (2D image codecs), adapted to 3D volumes and to a fully
parallel decoder. See ``docs/model-latent.md`` for the design, the measurements and the
bit-exactness argument. In short:

* **Latents.** ``L`` grids over the whole volume, level ``k`` of shape ``ceil(N / 2^k)`` per axis
  (an axis of length 1 stays 1, so thin and 2D volumes work), ``C`` channels each, stored as
  integers. They start as a Laplacian pyramid of the data; during training they are real
  numbers perturbed with uniform noise (first part of the schedule), then rounded with a
  straight-through gradient.
* **Synthesis.** Every level is upsampled to full resolution with separable linear interpolation
  (cell-centred, like ``align_corners=False``); the ``L*C`` values of a voxel go through a small
  per-voxel MLP, and latents + MLP channels through one 3x3x3 convolution -> one intensity in
  [0, 1]. Rendering works on slabs of the first axis (with a one-voxel halo), so memory is
  bounded by the slab, not the volume.
* **Entropy model.** A quantised Laplace per latent whose mean and scale come from a tiny MLP
  (shared by all levels, plus a per-level bias) fed with (a) the coarser level upsampled to this
  level (value and six face neighbours) and (b) the already decoded neighbours in the same level:
  by default the 8 sub-lattices of a 2x2x2 tiling are decoded one after the other (a latent sees
  those of its 26 neighbours in earlier passes); files without ``ctx_passes`` use a 3D
  checkerboard (2 passes). Either way decoding is a few vectorised passes per level (coarse to
  fine), no per-symbol loop.
* **Rate.** ``loss = MSE([0,1] data) + lmbda * bits / voxels``, bits from the differentiable
  Laplace likelihood (:func:`inrv.codec.entropy.laplace_bits`). The real rate is what the range
  coder writes (section ``latents``) plus the network weights (section ``synthesis``), which are
  entropy-coded too, each tensor at a step chosen by its measured rate-distortion cost
  (:mod:`inrv.codec.netcode`; files written before that hold fixed-precision affine weights).
"""

from __future__ import annotations

import dataclasses
import math
import time
import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn

from ..errors import InputError, RunError, UnsupportedVersionError
from .base import Encoded, Progress
from .config import LatentConfig, config_from_dict, config_to_dict
from .device import release_cpu_memory, resolve_device, seed_everything, tune_cpu_allocator
from .entropy import LaplaceReader, LaplaceStream, laplace_bits, snap_params
from . import netcode
from .quant import dequantize_state, quantize_state

# version of this family's payload (config key "v"): 2 added entropy-coded network weights
# ("wq"/"wmax"), deeper context models and wider synthesis options; a reader refuses a newer one
# the background mask is used where its blocks cover at least this share of the voxels: on mni_t1
# (77 %) it gains 1.8 dB at 0.5 bpv; on mni_patch64 (7 %) there is little to gain and ~100 B to pay
BG_MIN_FRACTION = 0.2
FORMAT_VERSION = 3     # 3: files with a background mask (files without one are still written as 2)
# config fields the decoder needs; always written to Encoded.config
_ARCH_FIELDS = ("model", "levels", "channels", "synth_width", "synth_layers", "conv_channels", "ctx_width",
                "ctx_passes", "ctx_layers", "upsample")


# ----------------------------------------------------------------------------- geometry helpers

def level_shapes(shape: tuple[int, int, int], levels: int) -> list[tuple[int, int, int]]:
    """Grid shapes of the latent levels: ``ceil(n / 2^k)`` per axis, stopping early at 1^3."""
    out = []
    for k in range(levels):
        s = tuple(max(1, -(-n // (2 ** k))) for n in shape)
        if out and s == out[-1]:
            break
        out.append(s)
    return out


def _interp(n_in: int, n_out: int, rows: np.ndarray | None = None):
    """Indices and weights of cell-centred linear interpolation from ``n_in`` to ``n_out`` samples.

    Pure float64 arithmetic (deterministic on any IEEE machine). ``rows`` picks output indices.
    """
    i = np.arange(n_out, dtype=np.float64) if rows is None else np.asarray(rows, dtype=np.float64)
    src = (i + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def up_torch(x: torch.Tensor, out: tuple[int, ...], rows: np.ndarray | None = None,
             n0: int | None = None, off: int = 0) -> torch.Tensor:
    """Upsample ``x`` (C, a, b, c) to (C, *out) separably; ``rows`` restricts axis 1 (first spatial).

    ``x`` may hold only rows ``[off, off + a)`` of a grid whose first axis has ``n0`` rows (a row
    window: the rows the output ``rows`` read must lie inside it)."""
    for ax in range(3):
        n_in, n_out = x.shape[ax + 1], out[ax]
        r = rows if ax == 0 else None
        if ax == 0 and n0 is not None:
            n_in = n0
        if n_in == n_out and r is None:
            continue
        i0, i1, w = _interp(n_in, n_out, r)
        if ax == 0 and off:
            i0, i1 = i0 - off, i1 - off
        shape = [1, 1, 1, 1]
        shape[ax + 1] = len(w)
        wt = torch.as_tensor(w, dtype=x.dtype, device=x.device).view(shape)
        a = x.index_select(ax + 1, torch.as_tensor(i0, device=x.device))
        b = x.index_select(ax + 1, torch.as_tensor(i1, device=x.device))
        x = a + (b - a) * wt
    return x


def _interp_cubic(n_in: int, n_out: int, rows: np.ndarray | None = None):
    """Taps (4 index arrays) and weights (4 arrays) of cell-centred cubic (Keys, a = -1/2)
    interpolation from ``n_in`` to ``n_out`` samples, edge-clamped; float64 numpy."""
    i = np.arange(n_out, dtype=np.float64) if rows is None else np.asarray(rows, dtype=np.float64)
    src = np.clip((i + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
    f = np.floor(src)
    t = src - f
    f = f.astype(np.int64)
    idx = [np.clip(f + d, 0, n_in - 1) for d in (-1, 0, 1, 2)]
    w = [((-0.5 * t + 1.0) * t - 0.5) * t,
         (1.5 * t - 2.5) * t * t + 1.0,
         ((-1.5 * t + 2.0) * t + 0.5) * t,
         (0.5 * t - 0.5) * t * t]
    return idx, w


def up_cubic_torch(x: torch.Tensor, out: tuple[int, ...], rows: np.ndarray | None = None,
                   n0: int | None = None, off: int = 0) -> torch.Tensor:
    """Like :func:`up_torch` with cubic (Keys) interpolation: smoother basis functions for the
    coarse latent levels of the synthesis."""
    for ax in range(3):
        n_in, n_out = x.shape[ax + 1], out[ax]
        r = rows if ax == 0 else None
        if ax == 0 and n0 is not None:
            n_in = n0
        if n_in == n_out and r is None:
            continue
        idx, w = _interp_cubic(n_in, n_out, r)
        if ax == 0 and off:
            idx = [i - off for i in idx]
        shape = [1, 1, 1, 1]
        shape[ax + 1] = len(w[0])
        acc = None
        for ii, ww in zip(idx, w):
            term = x.index_select(ax + 1, torch.as_tensor(ii, device=x.device)) * \
                torch.as_tensor(ww, dtype=x.dtype, device=x.device).view(shape)
            acc = term if acc is None else acc + term
        x = acc
    return x


def up_numpy(x: np.ndarray, out: tuple[int, ...]) -> np.ndarray:
    """float64 numpy twin of :func:`up_torch` (used by the entropy coder on both sides)."""
    for ax in range(3):
        n_in, n_out = x.shape[ax + 1], out[ax]
        if n_in == n_out:
            continue
        i0, i1, w = _interp(n_in, n_out)
        shape = [1, 1, 1, 1]
        shape[ax + 1] = len(w)
        a = np.take(x, i0, axis=ax + 1)
        b = np.take(x, i1, axis=ax + 1)
        x = a + (b - a) * w.reshape(shape)
    return x


def soft_round(x: torch.Tensor, t: float) -> torch.Tensor:
    """Differentiable rounding with temperature ``t`` (Agustsson & Theis 2020): identity as
    ``t`` grows, ``round`` as ``t -> 0``; used with an annealed ``t`` during training (as in C3)."""
    m = torch.floor(x) + 0.5
    a = 1.0 / t
    return m + torch.tanh(a * (x - m)) / (2.0 * math.tanh(a / 2.0))


def _kumaraswamy(shape, a: float, gen: torch.Generator) -> torch.Tensor:
    """Noise on [-1/2, 1/2]: a Kumaraswamy(a, b) variable minus 1/2 with its mode at 0, peaked for
    ``a > 1`` and uniform at ``a = 1`` (C3 anneals ``a`` from 2 to 1 alongside the temperature)."""
    u = torch.rand(shape, generator=gen)
    if abs(a - 1.0) < 1e-9:
        return u - 0.5
    b = ((a - 1.0) / 0.5 ** a + 1.0) / a
    return (1.0 - (1.0 - u).clamp_min(1e-12) ** (1.0 / b)) ** (1.0 / a) - 0.5


def parity(shape: tuple[int, int, int]) -> np.ndarray:
    """Checkerboard mask: True for the second ("B") half, coded after the first ("A") half."""
    i, j, k = np.indices(shape, sparse=True)
    return ((i + j + k) % 2).astype(bool)


# 8-pass order of the 2x2x2 sub-lattices (phase bits = (i%2, j%2, k%2)): a sparse lattice first,
# then its body centres, then the face-diagonal and finally the axis-offset sub-lattices, each pass
# seeing every latent of the earlier passes among its 26 neighbours.
_PASS_ORDER_8 = (0b000, 0b111, 0b011, 0b101, 0b110, 0b100, 0b010, 0b001)
# the 26 neighbour offsets of a 3x3x3 neighbourhood, in a fixed order
_OFFSETS_26 = tuple((a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0))


def pass_map(shape: tuple[int, int, int], passes: int) -> np.ndarray:
    """Coding pass (0 .. passes-1) of every latent of a level: 2 = checkerboard, 8 = 2x2x2 sub-lattices."""
    i, j, k = np.indices(shape, sparse=True)
    if passes == 2:
        return ((i + j + k) % 2).astype(np.int64)
    if passes == 8:
        rank = np.empty(8, np.int64)
        rank[list(_PASS_ORDER_8)] = np.arange(8)
        return rank[4 * (i % 2) + 2 * (j % 2) + (k % 2)]
    raise InputError(f"unsupported number of context passes {passes} (2 or 8)")


def avail_table() -> np.ndarray:
    """(8, 26) bool: for a latent of pass p, whether its neighbour at ``_OFFSETS_26[o]`` is decoded
    before it (its pass is earlier). Translation invariant: the neighbour's phase is the latent's
    phase XOR the offset's parity bits."""
    rank = np.empty(8, np.int64)
    rank[list(_PASS_ORDER_8)] = np.arange(8)
    out = np.zeros((8, 26), bool)
    for p, ph in enumerate(_PASS_ORDER_8):
        for o, (a, b, c) in enumerate(_OFFSETS_26):
            out[p, o] = rank[ph ^ (4 * (a & 1) + 2 * (b & 1) + (c & 1))] < p
    return out


def _neigh26_torch(x: torch.Tensor) -> list[torch.Tensor]:
    """The 26 neighbours (order ``_OFFSETS_26``) of every cell of ``x`` (C, a, b, c), zero outside."""
    p = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1))
    a, b, c = x.shape[1:]
    return [p[:, 1 + u:1 + u + a, 1 + v:1 + v + b, 1 + w:1 + w + c] for u, v, w in _OFFSETS_26]


# the six face offsets, in the order of :func:`_neigh_torch` and of the coder's ``faces``
_FACES_6 = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def _neigh_torch(x: torch.Tensor) -> list[torch.Tensor]:
    """Six face neighbours of every cell of ``x`` (C, a, b, c), zero outside."""
    p = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1))
    a, b, c = x.shape[1:]
    return [p[:, 0:a, 1:b + 1, 1:c + 1], p[:, 2:a + 2, 1:b + 1, 1:c + 1],
            p[:, 1:a + 1, 0:b, 1:c + 1], p[:, 1:a + 1, 2:b + 2, 1:c + 1],
            p[:, 1:a + 1, 1:b + 1, 0:c], p[:, 1:a + 1, 1:b + 1, 2:c + 2]]


# ----------------------------------------------------------------------------- networks

class _Gather(torch.autograd.Function):
    """Strided slices of one tensor, concatenated per group along axis 0 (one output per group).

    Autograd through plain slicing allocates a zero tensor the size of the sliced input for every
    slice in the backward pass; here the backward accumulates every group's gradient into one
    zero tensor (a context pass gathers ~20 neighbours of a level: ~20x less gradient traffic)."""

    @staticmethod
    def forward(ctx, t, groups):
        ctx.shape, ctx.groups = t.shape, groups
        return tuple(torch.cat([t[ix] for ix in g], 0) for g in groups)

    @staticmethod
    def backward(ctx, *grads):
        out = None
        for g, gr in zip(ctx.groups, grads):
            if gr is None:
                continue
            if out is None:
                out = gr.new_zeros(ctx.shape)
            c = gr.shape[0] // len(g)
            for k, ix in enumerate(g):
                out[ix] += gr[k * c:(k + 1) * c]
        return out, None


class ContextModel(nn.Module):
    """Per-latent Laplace (mean, log-scale) from coarser-level and checkerboard-neighbour features.

    Features per latent (C = channels): the coarser level upsampled here (C) and its six face
    neighbours (6C), the six face neighbours of the same level (6C; zero for the first
    checkerboard half), and a half flag (1).
    One hidden ReLU layer shared by all levels, plus a per-level output bias.
    """

    def __init__(self, channels: int, width: int, levels: int, passes: int = 2, layers: int = 1,
                 coarse: int = 7):
        super().__init__()
        if not 1 <= layers <= 4:
            raise InputError(f"unsupported number of context layers {layers} (1 to 4)")
        if coarse not in (7, 27) or (coarse == 27 and passes != 8):
            raise InputError(f"unsupported coarse context {coarse} (7, or 27 with the 8-pass context)")
        self.c = channels
        self.passes = passes
        self.coarse = coarse
        # passes 2: [coarse (C), its 6 face neighbours (6C), same-level face neighbours (6C), flag (1)]
        # passes 8: [coarse (C), its 6 face (or 26) neighbours (6C or 26C), 26 same-level neighbours (26C),
        #            pass one-hot (8)]
        nf = 13 * channels + 1 if passes == 2 else (coarse + 26) * channels + 8
        self.l1 = nn.Linear(nf, width)
        # further hidden layers, residual: h + relu(m(h)) (they start near the one-layer model)
        self.mids = nn.ModuleList([nn.Linear(width, width) for _ in range(layers - 1)])
        self.l2 = nn.Linear(width, 2 * channels)
        self.level_bias = nn.Parameter(torch.zeros(levels, 2 * channels))
        with torch.no_grad():
            self.l2.weight.mul_(0.1)
            self.l2.bias.zero_()
            for m in self.mids:
                m.weight.mul_(0.1)
                m.bias.zero_()
            self.level_bias[:, channels:] = 0.0

    def features(self, q: torch.Tensor, coarse: torch.Tensor | None, pmap: torch.Tensor) -> torch.Tensor:
        """q: (C, a, b, c) values of this level; coarse: (C, a, b, c) or None; pmap: (a, b, c) the
        coding pass of each latent (:func:`pass_map`). Only earlier passes are visible."""
        co = coarse if coarse is not None else torch.zeros_like(q)
        if self.passes == 2:
            hb = pmap.to(q.dtype)
            nb = [n * hb for n in _neigh_torch(q)]
            return torch.cat([co] + _neigh_torch(co) + nb + [hb[None]], 0)
        av = torch.as_tensor(avail_table(), device=q.device)[pmap].to(q.dtype)     # (a, b, c, 26)
        nb = [n * av[..., o] for o, n in enumerate(_neigh26_torch(q))]
        onehot = torch.nn.functional.one_hot(pmap, 8).to(q.dtype).permute(3, 0, 1, 2)
        cn = _neigh26_torch(co) if self.coarse == 27 else _neigh_torch(co)
        return torch.cat([co] + cn + nb + [onehot], 0)

    def pass_bits(self, q: torch.Tensor, coarse: torch.Tensor | None, level: int, r_lo: int, a: int,
                  b: int, checkpoint: bool = False) -> torch.Tensor:
        """Bits of the rows ``[a, b)`` (absolute, first axis) of a level under the 8-pass model, from
        ``q`` (C, n, B, D) holding its rows ``[r_lo, r_lo + n)`` (a halo row on each side of
        ``[a, b)`` where the level has one) and ``coarse`` likewise (or None).

        The same function as ``forward(features(...))`` summed over those rows, computed pass by
        pass on strided sub-lattices, the way the coder does it: only the neighbours a pass can see
        are gathered (their weight columns selected, the pass one-hot folded into the bias), so no
        masks and about half the first-layer work.

        ``checkpoint``: each pass keeps only its gathered inputs for the backward pass and recomputes
        its network there (``torch.utils.checkpoint``): ~7x less activation memory for the rate, for
        one more forward pass of the context network (used on GPUs, where memory is the limit)."""
        C = self.c
        co = coarse if coarse is not None else torch.zeros_like(q)
        qp = torch.nn.functional.pad(q, (1, 1, 1, 1, 1, 1))
        cp = torch.nn.functional.pad(co, (1, 1, 1, 1, 1, 1))
        B, D = q.shape[2:]
        avail = avail_table()
        c_offs = _OFFSETS_26 if self.coarse == 27 else _FACES_6
        plan, q_groups, c_groups = [], [], []
        for p, ph in enumerate(_PASS_ORDER_8):
            pa, pb, pc = (ph >> 2) & 1, (ph >> 1) & 1, ph & 1
            s0 = a + ((pa - a) % 2) - r_lo          # first counted local row of this phase
            e0 = b - r_lo
            if s0 >= e0 or pb >= B or pc >= D:
                continue

            def at(u, v, w, s0=s0, e0=e0, pb=pb, pc=pc):
                return (slice(None), slice(1 + s0 + u, 1 + e0 + u, 2), slice(1 + pb + v, 1 + B + v, 2),
                        slice(1 + pc + w, 1 + D + w, 2))

            used = [o for o in range(26) if avail[p, o]]
            # this level: the latent itself, then its visible neighbours; the coarser grid: the
            # value here and its neighbours (one gather per grid, see _Gather)
            q_groups.append([at(0, 0, 0)] + [at(*_OFFSETS_26[o]) for o in used])
            c_groups.append([at(0, 0, 0)] + [at(*o) for o in c_offs])
            plan.append((p, used))
        if not plan:
            return q.new_zeros(())
        qf = _Gather.apply(qp, q_groups)
        cf = _Gather.apply(cp, c_groups)
        total = q.new_zeros(())
        for (p, used), qg, cg in zip(plan, qf, cf):
            cols = list(range(self.coarse * C)) + [self.coarse * C + o * C + c for o in used for c in range(C)]
            if checkpoint and torch.is_grad_enabled():
                bits = torch.utils.checkpoint.checkpoint(self._pass_net, qg, cg, level, p, cols,
                                                         use_reentrant=False)
            else:
                bits = self._pass_net(qg, cg, level, p, cols)
            total = total + bits
        return total

    def _pass_net(self, qg: torch.Tensor, cg: torch.Tensor, level: int, p: int, cols: list[int]) -> torch.Tensor:
        """Bits of one pass from its gathered latents ``qg`` (the values, then their visible
        neighbours) and coarse features ``cg``."""
        C = self.c
        w1 = self.l1.weight
        x = qg[:C].flatten(1)
        f = torch.cat([cg, qg[C:]], 0).flatten(1)
        bias = self.l1.bias + w1[:, (self.coarse + 26) * C + p]
        h = torch.addmm(bias[:, None], w1[:, cols], f).relu_()
        for m in self.mids:
            h = h + torch.addmm(m.bias[:, None], m.weight, h).relu_()
        o_ = torch.addmm((self.l2.bias + self.level_bias[level])[:, None], self.l2.weight, h)
        return laplace_bits(x, o_[:C], o_[C:]).sum()

    def forward(self, feats: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        f = feats.flatten(1)                        # (F, n)
        h = torch.addmm(self.l1.bias[:, None], self.l1.weight, f).relu_()
        for m in self.mids:
            h = h + torch.addmm(m.bias[:, None], m.weight, h).relu_()
        o = torch.addmm((self.l2.bias + self.level_bias[level])[:, None], self.l2.weight, h)
        o = o.reshape(2 * self.c, *feats.shape[1:])
        return o[: self.c], o[self.c:]


class Synthesis(nn.Module):
    """Latent values -> one intensity (on [0, 1]), with 3x3x3 spatial footprints.

    One 3x3x3 convolution (``skip``) to one channel over two groups of inputs: the ``L*C``
    upsampled latent channels (a *linear* path, initialised to pick the centre voxel with a
    weight ``delta`` per level, i.e. a Laplacian-pyramid sum; training turns it into learned
    synthesis filters) and ``conv_ch`` *non-linear* channels from a per-voxel MLP (``layers``
    hidden ReLU layers of ``width``; their conv weights start at zero). The input must carry a
    halo of ``HALO`` voxels on every side (see :func:`_synth_input`).
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


def _auto_ctx_width(lmbda: float, nvox: int) -> int:
    """The context width when ``ctx_width`` is None: 24 at rates where the latents dominate the file
    (lambda <= 1e-3: about 0.4 bpv and up on 64^3) or on large volumes (>= 4 M voxels, where the
    network is a negligible share), else 16 (measured on mni_patch64, model-latent.md step 18)."""
    return 24 if (lmbda <= 1e-3 or nvox >= 1 << 22) else 16


def _make_ctx(n_levels: int, cfg: LatentConfig) -> ContextModel:
    return ContextModel(cfg.channels, cfg.ctx_width, n_levels, cfg.ctx_passes, cfg.ctx_layers, cfg.ctx_coarse)


def _make_synth(n_levels: int, cfg: LatentConfig) -> Synthesis:
    return Synthesis(n_levels * cfg.channels, cfg.synth_width, cfg.synth_layers, cfg.conv_channels,
                     cfg.synth_kernel, cfg.synth_convs)


# ----------------------------------------------------------------------------- numpy context model

_CTX_DTYPE = np.float32   # context-model arithmetic at coding time (IEEE single, elementwise)


def _np_context(w: dict[str, np.ndarray], feats: np.ndarray, level: int,
                n_used: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of :meth:`ContextModel.forward` in float32 (``_CTX_DTYPE``), written as elementwise
    multiply-adds in a fixed order (no BLAS, no FMA, no transcendental functions): every operation
    is one correctly rounded IEEE operation, so the result is reproducible bit for bit.
    Only the first ``n_used`` features are read (the rest are known to be zero)."""
    f = feats.reshape(feats.shape[0], -1)            # (F, n)
    w1, b1, w2, b2, lb = (w[k].astype(_CTX_DTYPE) for k in ("ctx.l1.weight", "ctx.l1.bias", "ctx.l2.weight",
                                                              "ctx.l2.bias", "ctx.level_bias"))
    nf = f.shape[0] if n_used is None else n_used
    out = _np_mlp(f, w1[:, :nf], b1, w2, (b2 + lb[level]).astype(_CTX_DTYPE), _np_mids(w))
    c = w2.shape[0] // 2
    shp = (c,) + feats.shape[1:]
    return out[:c].reshape(shp), out[c:].reshape(shp)


def _np_affine(f: np.ndarray, w: np.ndarray, b: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``w @ f + b`` in float32 as elementwise multiply-adds in a fixed order (bias first, then the
    inputs one by one): one correctly rounded IEEE operation at a time. f: (F, n); tmp: (n,) scratch."""
    out = np.empty((w.shape[0], f.shape[1]), _CTX_DTYPE)
    for j in range(w.shape[0]):
        acc = out[j]
        acc.fill(b[j])
        for i in range(w.shape[1]):
            np.multiply(f[i], w[j, i], out=tmp)
            np.add(acc, tmp, out=acc)
    return out


def _np_mlp(f: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
            mids: list[tuple[np.ndarray, np.ndarray]] = ()) -> np.ndarray:
    """``w2 @ relu(w1 @ f + b1) + b2`` in float32 with :func:`_np_affine`'s fixed-order arithmetic (the
    weights already selected, the biases already combined). f: (F, n) float32. Each ``(wm, bm)`` of
    ``mids`` adds a residual hidden layer ``h <- h + relu(wm @ h + bm)`` (:class:`ContextModel`)."""
    tmp = np.empty(f.shape[1], _CTX_DTYPE)
    h = _np_affine(f, w1, b1, tmp)
    np.maximum(h, 0.0, out=h)
    for wm, bm in mids:
        g = _np_affine(h, wm, bm, tmp)
        np.maximum(g, 0.0, out=g)
        np.add(h, g, out=h)
    return _np_affine(h, w2, b2, tmp)


def _np_mids(w: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The context model's residual hidden layers (``ctx.mids.<i>``), float32, in order."""
    out, i = [], 0
    while f"ctx.mids.{i}.weight" in w:
        out.append(tuple(np.asarray(w[f"ctx.mids.{i}.{k}"], dtype=np.float64).astype(_CTX_DTYPE)
                         for k in ("weight", "bias")))
        i += 1
    return out


def _gather_features(co_p: np.ndarray, cur_p: np.ndarray | None, idx: np.ndarray, strides) -> np.ndarray:
    """Context features (the order of :meth:`ContextModel.features`) of the cells at flat indices
    ``idx`` of the zero-padded grids ``co_p`` / ``cur_p`` ((C, n_padded) each). ``cur_p`` is None
    for the first checkerboard half (its neighbour features and flag are zero)."""
    offs = (-strides[0], strides[0], -strides[1], strides[1], -strides[2], strides[2])
    C = co_p.shape[0]
    parts = [co_p[:, idx]] + [co_p[:, idx + o] for o in offs]
    if cur_p is None:       # first half: the remaining 6C + 1 features are zero (not materialised)
        pass
    else:
        parts += [cur_p[:, idx + o] for o in offs] + [np.ones((1, idx.size))]
    return np.concatenate(parts, 0).astype(_CTX_DTYPE)


def _level_grid(out, k: int, shapes, C: int):
    """Working grids of level ``k`` for the coder: strides of the zero-padded grid, the coarser level
    (already decoded) upsampled onto it (flat, float64), the padded grid this level is decoded into,
    and its interior view."""
    shp = shapes[k]
    pshp = tuple(n + 2 for n in shp)
    strides = (pshp[1] * pshp[2], pshp[2], 1)
    co_p = np.zeros((C,) + pshp)
    if k + 1 < len(shapes):
        co_p[:, 1:-1, 1:-1, 1:-1] = up_numpy(out[k + 1].astype(np.float64), shp)
    cur_p = np.zeros((C,) + pshp)
    return strides, co_p.reshape(C, -1), cur_p, cur_p[:, 1:-1, 1:-1, 1:-1]


def _flat_inner(shp, strides, start=(0, 0, 0), step: int = 1) -> np.ndarray:
    """Padded flat indices (C order) of the interior cells ``start + step * (i, j, k)`` of a level."""
    i, j, k = (np.arange(a, n, step) + 1 for a, n in zip(start, shp))
    return i[:, None, None] * strides[0] + j[None, :, None] * strides[1] + k[None, None, :]


def _code_pass(coder, vals, plist, chunk: int, C: int, n: int):
    """Range-code one pass, chunk by chunk in order, with its snapped (mean, scale) per chunk: encode
    ``vals`` (C, n), or (``vals`` None) decode and return the (C, n) int32 latents."""
    dec = None if vals is not None else np.empty((C, n), np.int32)
    for s0, (m, sc) in zip(range(0, n, chunk), plist):
        if vals is not None:
            coder.encode(vals[:, s0:s0 + chunk], m, sc)
        else:
            dec[:, s0:s0 + chunk] = coder.decode(m, sc).reshape(C, -1)
    return vals if vals is not None else dec


def code_latents(latents: list[np.ndarray] | None, w: dict[str, np.ndarray], shapes, channels: int,
                 data: bytes | None = None, lo: int = 0, hi: int = 0, chunk: int = 1 << 19, passes: int = 2):
    """Encode (``latents`` given) or decode (``data`` given) all levels, coarse to fine.

    The same function runs both directions, so the model parameters fed to the coder are computed
    by literally the same code from the same integers. Per level: the first checkerboard half,
    then the second, each in chunks of ``chunk`` latents (bounded memory; the chunking is part of
    the format only in that encoder and decoder use the same order). Returns bytes (encode) or
    the list of int32 arrays (decode), each (C, *level_shape).
    """
    if passes == 8:
        return _code_latents_8(latents, w, shapes, channels, data, lo, hi, chunk)
    if passes != 2:
        raise InputError(f"unsupported number of context passes {passes} (2 or 8)")
    enc = latents is not None
    coder = LaplaceStream(lo, hi) if enc else LaplaceReader(data, lo, hi)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    C = channels
    out: list[np.ndarray | None] = [None] * len(shapes)
    for k in range(len(shapes) - 1, -1, -1):
        strides, co_p, cur_p, inner = _level_grid(out, k, shapes, C)
        flat_inner = _flat_inner(shapes[k], strides)
        hb = parity(shapes[k])
        for half in (False, True):
            mask = hb if half else ~hb
            idx_all = flat_inner[mask]                  # padded flat indices, C order
            plist = []
            for s0 in range(0, idx_all.size, chunk):
                feats = _gather_features(co_p, cur_p.reshape(C, -1) if half else None, idx_all[s0:s0 + chunk],
                                         strides)
                mean, ls = _np_context(w, feats, k, n_used=feats.shape[0])
                plist.append(snap_params(mean, ls))
            vals = latents[k][:, mask].astype(np.int32) if enc else None
            inner[:, mask] = _code_pass(coder, vals, plist, chunk, C, idx_all.size)
        out[k] = np.ascontiguousarray(inner).astype(np.int32)
    return coder.getvalue() if enc else out


def _code_latents_8(latents, w, shapes, C: int, data, lo: int, hi: int, chunk: int):
    """:func:`code_latents` with the 8-pass (2x2x2 sub-lattice) context: per level, coarse to fine,
    pass by pass; a latent's features are the coarser level (value + 6 face neighbours) and those
    of its 26 neighbours already decoded (earlier passes). Features known to be zero for a pass are
    not computed: their weight columns are dropped and the pass one-hot is folded into the bias."""
    workers = max(1, min(8, torch.get_num_threads()))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return _code_8(latents, w, shapes, C, data, lo, hi, min(chunk, 1 << 17), pool)
    return _code_8(latents, w, shapes, C, data, lo, hi, chunk, None)


def _code_8(latents, w, shapes, C: int, data, lo: int, hi: int, chunk: int, pool):
    # the coarse context width follows from the stored first-layer shape: (ncoarse + 26) C + 8 inputs
    ncoarse = (np.shape(w["ctx.l1.weight"])[1] - 8) // C - 26
    enc = latents is not None
    coder = LaplaceStream(lo, hi) if enc else LaplaceReader(data, lo, hi)
    f32 = {k: np.asarray(v, dtype=np.float64).astype(_CTX_DTYPE) for k, v in w.items()}
    w1, b1, w2, b2, lb = (f32[k] for k in ("ctx.l1.weight", "ctx.l1.bias", "ctx.l2.weight", "ctx.l2.bias",
                                           "ctx.level_bias"))
    mids = _np_mids(w)
    avail = avail_table()
    out: list[np.ndarray | None] = [None] * len(shapes)
    for k in range(len(shapes) - 1, -1, -1):
        strides, co_p, cur_p, inner = _level_grid(out, k, shapes, C)
        offs26 = [a * strides[0] + b * strides[1] + c * strides[2] for a, b, c in _OFFSETS_26]
        faces = offs26 if ncoarse == 27 else (-strides[0], strides[0], -strides[1], strides[1], -strides[2], strides[2])
        cur_flat = cur_p.reshape(C, -1)              # view
        b2k = (b2 + lb[k]).astype(_CTX_DTYPE)
        for p, ph in enumerate(_PASS_ORDER_8):
            # pass p is the sub-lattice of index parities ph: its cells in C order, as strided views
            # (no level-sized index or mask arrays: on 512^3 those were 1 GB each)
            par = ((ph >> 2) & 1, (ph >> 1) & 1, ph & 1)
            sub = (slice(None),) + tuple(slice(b_, None, 2) for b_ in par)
            idx_all = _flat_inner(shapes[k], strides, par, 2).ravel()
            used = [o for o in range(26) if avail[p, o]]
            cols = list(range(ncoarse * C)) + [ncoarse * C + o * C + c for o in used for c in range(C)]
            w1p = np.ascontiguousarray(w1[:, cols])
            b1p = (b1 + w1[:, (ncoarse + 26) * C + p]).astype(_CTX_DTYPE)

            def params(s0, idx_all=idx_all, used=used, w1p=w1p, b1p=b1p, b2k=b2k):
                idx = idx_all[s0:s0 + chunk]
                parts = [co_p[:, idx]] + [co_p[:, idx + o] for o in faces] + \
                        [cur_flat[:, idx + offs26[o]] for o in used]
                feats = np.concatenate(parts, 0).astype(_CTX_DTYPE)
                o_ = _np_mlp(feats, w1p, b1p, w2, b2k, mids)
                return snap_params(o_[:C], o_[C:])

            # a pass reads only earlier passes, so the parameters of all its chunks can be computed
            # at once, in parallel (numpy releases the GIL); the coder then runs through them in order
            starts = list(range(0, idx_all.size, chunk))
            if pool is not None and len(starts) > 1:
                plist = list(pool.map(params, starts))
            else:
                plist = [params(s0) for s0 in starts]
            vals = latents[k][sub].reshape(C, -1).astype(np.int32) if enc else None
            inner[sub] = _code_pass(coder, vals, plist, chunk, C, idx_all.size).reshape(inner[sub].shape)
        out[k] = np.ascontiguousarray(inner).astype(np.int32)
    return coder.getvalue() if enc else out


# ----------------------------------------------------------------------------- weight storage

_GROUPS = ("syn.w", "syn.c", "syn.b", "ctx.w", "ctx.b")


def _group_of(name: str) -> str:
    """Quantisation group of a tensor: tensors of similar magnitude share one (scale, offset)."""
    net = name.split(".", 1)[0]
    if name.endswith("bias") or name.endswith("level_bias"):
        return f"{net}.b"
    if name == "syn.skip.weight":
        return "syn.c"
    return f"{net}.w"


def _arch_shapes(n_levels: int, cfg: LatentConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every stored network tensor, in storage order (from the architecture)."""
    syn = _make_synth(n_levels, cfg)
    ctx = _make_ctx(n_levels, cfg)
    out = {f"syn.{k}": tuple(v.shape) for k, v in syn.state_dict().items()}
    out.update({f"ctx.{k}": tuple(v.shape) for k, v in ctx.state_dict().items()})
    return out


def pack_nets(state: dict[str, np.ndarray], bits: int) -> tuple[bytes, list[list[float]]]:
    """Quantise the networks as five flat groups (see :func:`_group_of`) with
    ``quantize_state``; return the payload and only the per-group (scale, offset) pairs: the rest
    of the quantisation meta follows from the architecture (see :func:`unpack_nets`)."""
    flat = {g: np.concatenate([np.ravel(v) for k, v in state.items() if _group_of(k) == g]) for g in _GROUPS}
    payload, meta = quantize_state(flat, bits=bits)
    compact = [[meta["tensors"][g]["scale"][0], meta["tensors"][g]["offset"][0]] for g in _GROUPS]
    return payload, compact


def unpack_nets(payload: bytes, compact, bits: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_nets`: rebuild the full quantisation meta, dequantise, split by name."""
    if not isinstance(compact, list) or len(compact) != len(_GROUPS):
        raise InputError("bad weight-quantisation parameters")
    tensors, off = {}, 0
    sizes = {g: sum(int(np.prod(s)) for k, s in shapes.items() if _group_of(k) == g) for g in _GROUPS}
    for g, sc in zip(_GROUPS, compact):
        nb = (sizes[g] * bits + 7) // 8
        tensors[g] = {"shape": [sizes[g]], "bits": bits, "axis": None, "scale": [sc[0]], "offset": [sc[1]],
                      "byte_offset": off, "nbytes": nb}
        off += nb
    flat = dequantize_state(payload, {"scheme": "affine-v1", "tensors": tensors})
    out, pos = {}, {g: 0 for g in _GROUPS}
    for k, s in shapes.items():
        g, n = _group_of(k), int(np.prod(s))
        out[k] = flat[g][pos[g]:pos[g] + n].reshape(s)
        pos[g] += n
    return out


def _decode_nets(payload: bytes, conf: dict, cfg: LatentConfig, n_levels: int) -> dict[str, np.ndarray]:
    """The dequantised network tensors of a file: entropy-coded (``wq``) or, in files written
    before that, affine-packed at ``weight_bits`` (``quant``)."""
    shapes = _arch_shapes(n_levels, cfg)
    if "wq" in conf:
        flat = netcode.decode(payload, conf["wq"], conf.get("wmax"), [int(np.prod(s)) for s in shapes.values()])
        return {k: f.reshape(s) for (k, s), f in zip(shapes.items(), flat)}
    if not cfg.weight_bits:
        raise InputError("no network-weight quantisation in the file")
    return unpack_nets(payload, conf["quant"], int(cfg.weight_bits), shapes)


def _choose_weight_steps(state: dict[str, np.ndarray], names: list[str], dist_of, lat_bits_of,
                         lam_per_bit: float, span: int = 12) -> dict[str, int]:
    """Per-tensor quantisation step ``2**-e`` by measured rate-distortion cost (Cool-chic's recipe).

    Coordinate-wise, in storage order: every tensor starts at its finest step; then each one in
    turn is measured at every step from the finest to ``2**span`` times coarser (about 4 bits over
    its range) and keeps the one with the lowest ``distortion + lam_per_bit * (latent bits + weight
    bits)``. The whole range is measured because the error of a rounded tensor is not monotone in
    the step (a bias can land closer at a coarse step than at a finer one), so a search that stops
    at the first rise can stop far from the best step. Synthesis tensors change only the
    distortion (``dist_of``), context tensors only the latent bits (``lat_bits_of``).
    """
    exps = {n: netcode.finest_exp(state[n]) for n in names}

    def deq():
        return {n: netcode.dequantize(netcode.quantize(state[n], exps[n]), exps[n]).reshape(state[n].shape)
                for n in names}

    for n in names:
        f = exps[n]
        best_e, best_c = f, math.inf
        for e in range(f, f - span - 1, -1):
            exps[n] = e
            term = dist_of(deq()) if n.startswith("syn.") else lam_per_bit * lat_bits_of(deq())
            c = term + lam_per_bit * netcode.tensor_bits(state[n], e)
            if c < best_c:
                best_e, best_c = e, c
        exps[n] = best_e
    return exps


# ----------------------------------------------------------------------------- background mask

def background_blocks(vol: np.ndarray, block: int) -> np.ndarray:
    """(nb0, nb1, nb2) bool: the ``block``^3 blocks (the last ones partial) whose voxels all equal the
    volume's minimum: the air around a head, the zero padding of a template."""
    eq = vol == vol.min()
    pads = [(0, (-n) % block) for n in vol.shape]
    eq = np.pad(eq, pads, constant_values=True)
    nb = [n // block for n in eq.shape]
    return eq.reshape(nb[0], block, nb[1], block, nb[2], block).all(axis=(1, 3, 5))


def expand_blocks(blocks: np.ndarray, block: int, shape, r0: int = 0, r1: int | None = None) -> np.ndarray:
    """Voxel mask of rows ``[r0, r1)`` (first axis) of a volume of ``shape`` from its block mask."""
    r1 = shape[0] if r1 is None else r1
    # index by block number: memory is that of the output, whatever the block edge a file declares
    return blocks[np.ix_(np.arange(r0, r1) // block, np.arange(shape[1]) // block, np.arange(shape[2]) // block)]


def pack_blocks(blocks: np.ndarray) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=19).compress(np.packbits(blocks.ravel()).tobytes())


def unpack_blocks(data: bytes, nb) -> np.ndarray:
    """Inverse of :func:`pack_blocks` for a block grid of shape ``nb``; reads at most the bytes that grid
    needs (a frame that declares more is not trusted), and a short or long payload is an error."""
    import io

    import zstandard

    n = (int(np.prod(nb)) + 7) // 8
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(n + 1)
    if len(raw) != n:
        raise InputError("corrupt background mask")
    return np.unpackbits(np.frombuffer(raw, np.uint8), count=int(np.prod(nb))).astype(bool).reshape(nb)


# ----------------------------------------------------------------------------- the family

class LatentModel:
    """Model family ``latent``. ``fit(array, LatentConfig) -> Encoded``; ``render(Encoded) -> array``.

    ``render(shape=...)`` accepts only the fitted shape (anything else raises ``InputError``): the
    latent grids are tied to the voxel grid.
    """

    name = "latent"

    # ------------------------------------------------------------------ fit
    def fit(self, data: np.ndarray, config: LatentConfig | None = None, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded:
        cfg = config if config is not None else LatentConfig()
        if not isinstance(cfg, LatentConfig):
            raise InputError("the latent model needs a LatentConfig")
        arr = np.asarray(data)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise InputError(f"the latent model takes a 2D or 3D array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InputError(f"unsupported dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise InputError("the volume contains NaN or infinite values")
        if cfg.target_bpv is not None and cfg.target_psnr is not None:
            raise InputError("give target_bpv or target_psnr, not both")
        if cfg.upsample not in ("linear", "cubic"):
            raise InputError(f"unknown upsampling {cfg.upsample!r} (linear or cubic)")
        pass_map((1, 1, 1), cfg.ctx_passes)       # validates ctx_passes
        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        t0 = time.time()
        if cfg.target_bpv is None and cfg.target_psnr is None:
            enc = self._fit_once(arr, cfg, cfg.lmbda, cfg.steps, dev, progress)
        else:
            enc = self._search(arr, cfg, dev, progress)
        enc.stats["seconds"] = round(time.time() - t0, 2)
        return enc

    def _search(self, arr, cfg: LatentConfig, dev, progress) -> Encoded:
        """Pick lambda for ``target_bpv`` / ``target_psnr``: bracket on log-lambda, then regula falsi."""
        by_rate = cfg.target_bpv is not None
        target = float(cfg.target_bpv if by_rate else cfg.target_psnr)
        if target <= 0:
            raise InputError("target_bpv / target_psnr must be positive")
        s_steps = cfg.search_steps or cfg.steps
        tried: list[tuple[float, float, Encoded]] = []   # (log lambda, measure, encoded)

        def measure(e: Encoded) -> float:
            # both measures decrease as lambda grows (bpv in log, to make it near-linear in log lambda)
            return math.log(e.stats["bpv_total"]) if by_rate else e.stats["psnr"]

        goal = math.log(target) if by_rate else target
        x = math.log(cfg.lmbda)
        for it in range(max(1, cfg.search_iters)):
            e = self._fit_once(arr, cfg, math.exp(x), s_steps, dev, None)
            tried.append((x, measure(e), e))
            closest = min(tried, key=lambda t: abs(t[1] - goal))
            for t in tried:   # keep one volume-sized reconstruction, the closest fit's, not one per fit
                if t is not closest:
                    t[2].reconstruction = None
            if progress:
                progress(it + 1, cfg.search_iters, {"loss": e.stats["final_loss"], "lambda": math.exp(x),
                                                    "bpv": e.stats["bpv_total"],
                                                    "psnr": e.stats["psnr"]})
            m = tried[-1][1]
            if (abs(math.exp(m) - target) / target < 0.03) if by_rate else abs(m - goal) < 0.1:
                break
            above = [t for t in tried if t[1] > goal]     # lambda too small
            below = [t for t in tried if t[1] <= goal]    # lambda too large
            if above and below:
                a = max(above, key=lambda t: t[0])
                b = min(below, key=lambda t: t[0])
                if b[0] <= a[0] or a[1] == b[1]:
                    x = 0.5 * (a[0] + b[0])
                else:
                    x = a[0] + (a[1] - goal) * (b[0] - a[0]) / (a[1] - b[1])
                    lo_, hi_ = min(a[0], b[0]), max(a[0], b[0])
                    x = min(max(x, lo_ + 0.1 * (hi_ - lo_)), hi_ - 0.1 * (hi_ - lo_))
            else:
                x += 1.5 if above else -1.5
        best = min(tried, key=lambda t: abs(t[1] - goal))
        lam = math.exp(best[0])
        if s_steps != cfg.steps:
            e = self._fit_once(arr, cfg, lam, cfg.steps, dev, progress)
        else:
            e = best[2]
        e.stats["search"] = [{"lambda": math.exp(t[0]), "bpv": t[2].stats["bpv_total"], "psnr": t[2].stats["psnr"]}
                             for t in tried]
        return e

    def _fit_once(self, arr: np.ndarray, cfg: LatentConfig, lmbda: float, steps: int, dev,
                  progress: Progress | None) -> Encoded:
        seed_everything(cfg.seed)
        orig_shape = tuple(int(s) for s in arr.shape)
        vol = arr.reshape(orig_shape + (1,) * (3 - arr.ndim))      # a view: no float64 copy kept
        shape = tuple(vol.shape)
        lo, hi = float(vol.min()), float(vol.max())
        span = hi - lo if hi > lo else 1.0
        xn = np.empty(shape, np.float32)
        rows_ = max(1, (1 << 22) // max(1, shape[1] * shape[2]))
        for r in range(0, shape[0], rows_):      # normalised in float64, by slabs of ~4 M voxels
            xn[r:r + rows_] = (vol[r:r + rows_].astype(np.float64) - lo) / span
        x = torch.as_tensor(xn, device=dev)
        del xn
        nvox = int(np.prod(shape))
        # background mask: blocks equal to the minimum are restored exactly, so their voxels leave
        # the distortion (``keep`` = 0 there); without one, keep is None and nothing changes
        bgb = background_blocks(vol, cfg.bg_block) if cfg.bg_block > 0 else None
        keep = None
        if bgb is not None:
            keep = ~expand_blocks(bgb, cfg.bg_block, shape)
            if keep.mean() > 1.0 - BG_MIN_FRACTION:
                bgb = keep = None       # too little background for the mask to pay (or none)
        if keep is not None:
            keep = torch.as_tensor(keep, device=dev)     # bool: a quarter of a float mask's memory

        def sqerr(pred, r0=0, r1=None):
            r1 = shape[0] if r1 is None else r1
            e = (pred - x[r0:r1]) ** 2
            return torch.mean(e if keep is None else e * keep[r0:r1])
        shapes = level_shapes(shape, cfg.levels)
        L, C = len(shapes), cfg.channels
        if cfg.ctx_width is None:
            # a wider context model codes the latents in ~6 % fewer bytes and costs ~0.7 kB more of
            # network: worth it where the latents dominate the file (model-latent.md, step 18)
            cfg = dataclasses.replace(cfg, ctx_width=_auto_ctx_width(lmbda, nvox))

        ctx = _make_ctx(L, cfg).to(dev)
        syn = _make_synth(L, cfg).to(dev)
        lat = [nn.Parameter(t) for t in self._init_latents(x, shapes, C, lmbda, cfg, syn)]
        self._init_context(ctx, lat)
        # three speeds: latents (integer units), entropy model (log-scales, means), synthesis
        # (intensity units: a smaller step), and the linear path (weights ~ delta: smaller still)
        mlp = [p for n, p in syn.named_parameters() if not n.startswith("skip.")]
        opt = torch.optim.Adam([{"params": lat, "lr": cfg.lr},
                                {"params": list(ctx.parameters()), "lr": cfg.lr},
                                {"params": mlp, "lr": cfg.net_lr},
                                {"params": list(syn.skip.parameters()), "lr": cfg.net_lr * 0.05}])
        base_lrs = [g["lr"] for g in opt.param_groups]
        hard_from = int(round(steps * (1.0 - cfg.hard_frac)))
        slab = max(1, min(shape[0], cfg.max_voxels_per_step // max(1, shape[1] * shape[2])))
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

        def forward(qs, rows=None, win=None):
            r0, r1 = (0, shape[0]) if rows is None else (int(rows[0]), int(rows[-1]) + 1)
            return syn(_synth_input(qs, shape, r0, r1, cfg.upsample, syn.halo, win))

        # memory for time in the rate's backward pass: where memory is the limit (a GPU), by default
        ckpt = dev.type == "cuda" if cfg.rate_checkpoint is None else bool(cfg.rate_checkpoint)
        # coding pass of every latent: only the checkerboard context's training rate uses them
        pmaps = [torch.as_tensor(pass_map(sh, 2), device=dev) for sh in shapes] if cfg.ctx_passes == 2 else None

        def level_bits(qs, k: int, a: int, b: int, win=None):
            """Bits of rows [a, b) (first axis) of level k, computed on rows [a-1, b+1) so that
            every counted latent sees its real neighbours: equal to the whole-level sum's share.
            ``win``: ``qs`` holds row windows (per level: row count, first row held)."""
            lo_, hi_ = max(0, a - 1), min(shapes[k][0], b + 1)
            rows = np.arange(lo_, hi_)
            off = win[k][1] if win else 0
            coarse = up_torch(qs[k + 1], shapes[k], rows, *(win[k + 1] if win else (None, 0))) \
                if k + 1 < L else None
            q = qs[k][:, lo_ - off:hi_ - off]
            if cfg.ctx_passes == 8:
                return ctx.pass_bits(q, coarse, k, lo_, a, b, checkpoint=ckpt)
            mean, ls = ctx(ctx.features(q, coarse, pmaps[k][lo_:hi_]), k)
            return laplace_bits(q[:, a - lo_:b - lo_], mean[:, a - lo_:b - lo_], ls[:, a - lo_:b - lo_]).sum()

        def rate_bits(qs, rows=None, win=None):
            """Bits of all latents; with ``rows`` (a slab of output rows), an unbiased estimate from
            the matching rows of every level, scaled up (bounded memory on large volumes)."""
            bits = 0.0
            for k in range(L):
                n0 = shapes[k][0]
                if rows is None:
                    bits = bits + level_bits(qs, k, 0, n0, win)
                else:
                    a, b = rate_rows(shape[0], n0, int(rows[0]), int(rows[-1]) + 1)
                    bits = bits + level_bits(qs, k, a, b, win) * (n0 / (b - a))
            return bits

        def draw_rows():
            """The output rows of this step: a random slab, or None (the whole volume) when it fits."""
            if slab >= shape[0]:
                return None
            r0 = int(torch.randint(0, shape[0] - slab + 1, (1,), generator=gen))
            return np.arange(r0, r0 + slab)

        def step_terms(qs, noisy, rows, win):
            """Distortion of the synthesis from ``qs`` and rate of ``noisy`` on this step's rows."""
            pred = forward(qs, rows, win)
            dist = sqerr(pred) if rows is None else sqerr(pred, int(rows[0]), int(rows[-1]) + 1)
            return dist, rate_bits(noisy, rows, win)

        def windows(rows):
            """The latents a slab step reads, as row-window views of every level, and their
            (row count, first row) pairs; the whole latents when the step covers the volume."""
            if rows is None:
                return lat, None
            spans = _row_windows(shape, shapes, int(rows[0]), int(rows[-1]) + 1, syn.halo, cfg.upsample)
            return ([p[:, lo_:hi_] for p, (lo_, hi_) in zip(lat, spans)],
                    [(sh[0], lo_) for sh, (lo_, _) in zip(shapes, spans)])

        def total_bits(qs) -> float:
            """Exact bits of all latents, level by level in row chunks (no graph; bounded memory)."""
            tot = 0.0
            with torch.no_grad():
                for k in range(L):
                    n0 = shapes[k][0]
                    step_r = max(1, cfg.max_voxels_per_step // max(1, shapes[k][1] * shapes[k][2]))
                    for a in range(0, n0, step_r):
                        tot += float(level_bits(qs, k, a, min(n0, a + step_r)))
            return tot

        loss_v = float("nan")
        best: tuple = (math.inf, None, None, None)
        t_train = time.time()
        for step in range(steps):
            frac = step / max(1, steps)
            lr_f = 0.5 * (1 + math.cos(math.pi * frac))
            for g, b in zip(opt.param_groups, base_lrs):
                g["lr"] = b * max(lr_f, 0.02)
            rows = draw_rows()
            # only the rows of every level this step reads are rounded and noised (large volumes)
            src, win = windows(rows)
            if step < hard_from and cfg.soft_round:
                # C3's recipe: soft rounding with a temperature annealed from t0 to t1, plus noise;
                # the rate sees the noisy soft-rounded value, the synthesis its soft rounding
                prog = step / max(1, hard_from)
                t = cfg.soft_t0 * (cfg.soft_t1 / cfg.soft_t0) ** prog
                ka = cfg.noise_a0 + (1.0 - cfg.noise_a0) * prog
                noisy = [soft_round(p, t) + _kumaraswamy(p.shape, ka, gen).to(dev) for p in src]
                qs = [soft_round(n, t) for n in noisy]
            elif step < hard_from:
                qs = noisy = [p + (torch.rand(p.shape, generator=gen).to(dev) - 0.5) for p in src]
            else:
                qs = noisy = [p + (torch.round(p) - p).detach() for p in src]
            dist, bits = step_terms(qs, noisy, rows, win)
            loss = dist + lmbda * bits / nvox
            loss_v = float(loss.detach())
            if step >= hard_from and loss_v < best[0]:
                # hard-rounding loss is the true objective: keep the best state seen (the
                # straight-through phase can drift upwards late in training)
                best = (loss_v, [p.detach().clone() for p in lat],
                        {k: v.clone() for k, v in syn.state_dict().items()},
                        {k: v.clone() for k, v in ctx.state_dict().items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress and (step % 10 == 0 or step == steps - 1):
                progress(step + 1, steps, {"loss": loss_v, "mse": float(dist.detach()), "bpv_est": float(bits.detach()) / nvox})
        train_s = time.time() - t_train
        if best[1] is not None:
            with torch.no_grad():
                for p, b in zip(lat, best[1]):
                    p.copy_(b)
            syn.load_state_dict(best[2])
            ctx.load_state_dict(best[3])
            loss_v = best[0]
        # the training state is no longer needed: free it before coding (3-4 floats per latent)
        best = (best[0], None, None, None)
        opt.state.clear()
        for p in lat:
            p.grad = None
        release_cpu_memory()

        # ---- quantise the networks, then polish the latents for the quantised decoder
        state = {f"syn.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in syn.state_dict().items()}
        state.update({f"ctx.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in ctx.state_dict().items()})
        names = list(_arch_shapes(L, cfg))
        with torch.no_grad():
            hard = [torch.round(p) for p in lat]
            # a central slab of at most 2^19 voxels is enough to compare weight precisions (the
            # step search measures ~13 steps per tensor; 64^3 is measured whole)
            ev = max(1, min(slab, (1 << 19) // max(1, shape[1] * shape[2])))
            r0m = (shape[0] - ev) // 2
            ev_rows = np.arange(r0m, r0m + ev) if ev < shape[0] else None

            def load(deq):
                syn.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in deq.items() if k.startswith("syn.")})
                ctx.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in deq.items() if k.startswith("ctx.")})

            if cfg.weight_bits:
                # fixed-precision affine packing (the format before entropy-coded weights)
                payload, qmeta = pack_nets(state, int(cfg.weight_bits))
                wmeta = {"quant": qmeta}
            else:
                def dist_of(deq):
                    load(deq)
                    return float(sqerr(forward(hard, ev_rows), r0m, r0m + ev))

                def lat_bits_of(deq):
                    load(deq)
                    return float(rate_bits(hard, ev_rows)) if ev_rows is not None else total_bits(hard)

                exps = _choose_weight_steps(state, names, dist_of, lat_bits_of, lmbda / nvox)
                payload, wq, wmax = netcode.encode([state[n] for n in names], [exps[n] for n in names])
                wmeta = {"wq": wq, "wmax": wmax}
            # the weights the decoder will use, through the decoder's own path
            deq = _decode_nets(payload, wmeta, cfg, L)
            load(deq)
            del hard
        if cfg.polish_steps > 0:
            for p in list(syn.parameters()) + list(ctx.parameters()):
                p.requires_grad_(False)
            opt2 = torch.optim.Adam(lat, lr=cfg.lr * 0.05)
            for step in range(cfg.polish_steps):
                rows = draw_rows()
                src, win = windows(rows)
                qs = [p + (torch.round(p) - p).detach() for p in src]
                dist, rb = step_terms(qs, qs, rows, win)
                loss = dist + lmbda * rb / nvox
                opt2.zero_grad(set_to_none=True)
                loss.backward()
                opt2.step()

        with torch.no_grad():
            ints = [torch.round(p).detach().cpu().numpy().astype(np.int32) for p in lat]
            est_bits = total_bits([torch.as_tensor(i, dtype=torch.float32, device=dev) for i in ints])
        sym_lo = int(min(int(i.min()) for i in ints))
        sym_hi = int(max(int(i.max()) for i in ints))
        if sym_hi == sym_lo:
            sym_hi = sym_lo + 1
        lat_bytes = code_latents(ints, deq, shapes, C, lo=sym_lo, hi=sym_hi, passes=cfg.ctx_passes)

        # Fixed overhead matters (1 kB = 0.03 bpv on 64^3): the architecture fields are always
        # stored; the training-only fields only where they differ from LatentConfig's defaults.
        defaults = config_to_dict(LatentConfig())
        conf = {k: v for k, v in config_to_dict(cfg).items()
                if k in _ARCH_FIELDS or (v is not None and v != defaults.get(k))}
        conf["lmbda"] = float(lmbda)
        conf["steps"] = int(steps)
        sections = {"latents": lat_bytes, "synthesis": payload}
        conf.pop("bg_block", None)
        conf.pop("rate_checkpoint", None)        # how it was trained, not how it decodes
        if bgb is not None:
            sections["background"] = pack_blocks(bgb)
            conf["bg_block"] = int(cfg.bg_block)
        conf.update({
            "v": FORMAT_VERSION if bgb is not None else 2,
            "sym_range": [sym_lo, sym_hi],
            **wmeta,
        })
        enc = Encoded(model="latent", config=conf, sections=sections, shape=orig_shape, value_range=(lo, hi))
        # honest check: decode through the real path and measure
        dec_ints = code_latents(None, deq, shapes, C, data=lat_bytes, lo=sym_lo, hi=sym_hi,
                                passes=cfg.ctx_passes)
        if any(not np.array_equal(a, b) for a, b in zip(ints, dec_ints)):
            raise RunError("internal error: entropy-coded latents do not round-trip")
        del ints
        release_cpu_memory()
        # the quality check renders from the latents just decoded (the decoder's own path from here)
        rec = enc.reconstruction = _synthesise(dec_ints, deq, cfg, orig_shape, bgb, int(cfg.bg_block), (lo, hi), dev)
        del dec_ints
        if np.issubdtype(arr.dtype, np.integer):
            info = np.iinfo(arr.dtype)
            rec = np.clip(np.rint(rec), info.min, info.max)
        from .metrics import psnr
        import msgpack

        cfg_bytes = len(msgpack.packb(conf, use_bin_type=True))
        sec = sum(len(b) for b in sections.values())
        enc.stats.update({
            "steps": int(steps), "lambda": float(lmbda), "device": str(dev), "train_seconds": round(train_s, 2),
            "latent_bytes": len(lat_bytes), "synthesis_bytes": len(payload), "config_bytes": cfg_bytes,
            "background_bytes": len(sections.get("background", b"")),
            "background_fraction": 0.0 if keep is None else float(1.0 - keep.float().mean()),
            "bits_estimated": round(est_bits, 1), "bits_actual": 8 * len(lat_bytes),
            "bpv_sections": 8.0 * sec / nvox, "bpv_total": 8.0 * (sec + cfg_bytes) / nvox,
            "psnr": float(psnr(arr, rec)), "final_loss": loss_v, "levels": L,
        })
        return enc

    @staticmethod
    def _init_latents(x: torch.Tensor, shapes, C: int, lmbda: float, cfg: LatentConfig, syn: "Synthesis"):
        """Start from a Laplacian pyramid of the data instead of zeros (much faster convergence).

        Coarse to fine, each level holds the area-average of what the coarser levels miss, in
        units of a step ``delta``; the synthesis' linear path is set to ``delta`` for channel 0 of
        every level, so the initial decode is the pyramid sum. ``delta = init_scale *
        sqrt(6 lmbda / ln 2)`` is the high-rate optimum of a uniform quantiser for this lambda.
        """
        out = [torch.zeros((C,) + s, device=x.device) for s in shapes]
        if cfg.init_scale <= 0:
            return out
        delta = cfg.init_scale * math.sqrt(6.0 * lmbda / math.log(2.0))
        shape = tuple(x.shape)
        with torch.no_grad():
            recon = torch.full_like(x, 0.5)
            for k in range(len(shapes) - 1, -1, -1):
                res = (x - recon)[None, None]
                lv = torch.nn.functional.adaptive_avg_pool3d(res, shapes[k])[0] / delta
                out[k][0] = lv[0]
                up = up_cubic_torch if cfg.upsample == "cubic" else up_torch
                recon = recon + up(lv, shape)[0] * delta
                c_ = syn.centre()
                syn.skip.weight[0, k * C, c_, c_, c_] = delta
        return out

    @staticmethod
    def _init_context(ctx: "ContextModel", lat) -> None:
        """Start each level's Laplace at the maximum-likelihood mean/scale of its initial latents,
        so that the rate term is meaningful from step 0 (a scale-1 prior costs 1.3 bits per zero)."""
        C = ctx.c
        with torch.no_grad():
            for k, q in enumerate(lat):
                qf = q.reshape(C, -1)
                med = qf.median(dim=1).values
                b = (qf - med[:, None]).abs().mean(dim=1).clamp(0.02, 50.0)
                ctx.level_bias[k, :C] = med
                ctx.level_bias[k, C:] = torch.log(b)

    # ------------------------------------------------------------------ render
    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray:
        if encoded.model != "latent":
            raise InputError(f"not a latent-model encoding (model {encoded.model!r})")
        conf = encoded.config
        orig = tuple(int(s) for s in encoded.shape)
        if shape is not None and tuple(int(s) for s in shape) != orig:
            raise InputError(f"the latent model renders only its fitted shape {orig}, not {tuple(shape)}")
        v = conf.get("v", 1)
        if not isinstance(v, int) or v > FORMAT_VERSION:
            raise UnsupportedVersionError(f"latent-model payload version {v!r} is newer than this reader "
                                          f"({FORMAT_VERSION}): upgrade inrv")
        try:
            cfg = config_from_dict(conf)
            if "ctx_passes" not in conf:        # files written before the 8-pass context: checkerboard
                cfg = dataclasses.replace(cfg, ctx_passes=2)
            if "upsample" not in conf:          # ... and before cubic synthesis upsampling
                cfg = dataclasses.replace(cfg, upsample="linear")
            if "ctx_layers" not in conf:        # ... and before deeper context models
                cfg = dataclasses.replace(cfg, ctx_layers=1)
            vshape = orig + (1,) * (3 - len(orig))
            shapes = level_shapes(vshape, cfg.levels)
            lo_s, hi_s = (int(v) for v in conf["sym_range"])
            deq = _decode_nets(encoded.sections["synthesis"], conf, cfg, len(shapes))
            ints = code_latents(None, deq, shapes, cfg.channels, data=encoded.sections["latents"],
                                lo=lo_s, hi=hi_s, passes=cfg.ctx_passes)
            bgb = None
            if conf.get("bg_block"):
                bb = int(conf["bg_block"])
                if not 1 <= bb <= max(vshape) or "background" not in encoded.sections:
                    raise InputError("background mask declared but missing or invalid")
                bgb = unpack_blocks(encoded.sections["background"], [-(-n // bb) for n in vshape])
        except InputError:
            raise
        except Exception as exc:  # corrupt/hostile payloads: one clear line
            raise InputError(f"cannot decode latent-model payload: {exc}") from None
        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        return _synthesise(ints, deq, cfg, orig, bgb, int(conf.get("bg_block") or 0), encoded.value_range, dev)


def _synthesise(ints, deq, cfg: LatentConfig, orig, bgb, bb: int, value_range, dev) -> np.ndarray:
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
    with torch.no_grad():
        for r0 in range(0, vshape[0], rows_per):
            r1 = min(vshape[0], r0 + rows_per)
            o = syn(_synth_input(lat, vshape, r0, r1, cfg.upsample, syn.halo)).cpu().numpy()
            if bgb is not None:     # background blocks: exactly the minimum (0 on this scale)
                o[expand_blocks(bgb, bb, vshape, r0, r1)] = 0.0
            # back to the original range in float64, slab by slab (no volume-sized float64 array)
            out[r0:r1] = o.astype(np.float64) * span + lo
    return out.reshape(orig)
