"""The entropy model's context: coding-pass order, neighbour sets and the :class:`ContextModel`
network that predicts each latent's Laplace (mean, log-scale) from what the decoder already has."""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from ...errors import InputError
from .config import LatentConfig
from ..entropy import laplace_bits
from .passes import (_FACES_6, _OFFSETS_26, _PASS_ORDER_8, Pass, avail_table, n_features, parity,  # noqa: F401
                     pass_map, pass_plan)


def _neigh26_torch(x: torch.Tensor) -> list[torch.Tensor]:
    """The 26 neighbours (order ``_OFFSETS_26``) of every cell of ``x`` (C, a, b, c), zero outside."""
    p = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1))
    a, b, c = x.shape[1:]
    return [p[:, 1 + u:1 + u + a, 1 + v:1 + v + b, 1 + w:1 + w + c] for u, v, w in _OFFSETS_26]


def _neigh_torch(x: torch.Tensor) -> list[torch.Tensor]:
    """Six face neighbours of every cell of ``x`` (C, a, b, c), zero outside."""
    p = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1))
    a, b, c = x.shape[1:]
    return [p[:, 0:a, 1:b + 1, 1:c + 1], p[:, 2:a + 2, 1:b + 1, 1:c + 1],
            p[:, 1:a + 1, 0:b, 1:c + 1], p[:, 1:a + 1, 2:b + 2, 1:c + 1],
            p[:, 1:a + 1, 1:b + 1, 0:c], p[:, 1:a + 1, 1:b + 1, 2:c + 2]]


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
    """The entropy model's network: per latent, the mean and log-scale of a quantised Laplace.

    Its inputs (listed in column order in :mod:`inrv.codec.latent.passes`) are what the decoder has
    when the latent is decoded: the coarser level upsampled to this level (the value here and its 6
    face neighbours, or with ``coarse=27`` its whole 3x3x3 neighbourhood) and the neighbours on this
    level decoded in earlier passes: with ``passes=8`` the 2x2x2 sub-lattices one after the other
    (up to 26 neighbours, plus the pass one-hot), with ``passes=2`` a checkerboard (6 face
    neighbours for the second half, plus its flag). An MLP shared by all levels: one hidden ReLU
    layer of ``width``, ``layers - 1`` further residual layers (``h + relu(m(h))``), and a per-level
    output bias. :meth:`pass_bits` is the training rate of the 8-pass model, computed pass by pass
    like the coder (:mod:`inrv.codec.latent.coder`) does.
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
        nf = n_features(passes, channels, coarse)
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
                  b: int, checkpoint: bool = False, only: frozenset | None = None) -> torch.Tensor:
        """Bits of the rows ``[a, b)`` (absolute, first axis) of a level under the 8-pass model, from
        ``q`` (C, n, B, D) holding its rows ``[r_lo, r_lo + n)`` (a halo row on each side of
        ``[a, b)`` where the level has one) and ``coarse`` likewise (or None).

        The same function as ``forward(features(...))`` summed over those rows, computed pass by
        pass on strided sub-lattices, the way the coder does it: only the neighbours a pass can see
        are gathered (their weight columns selected, the pass one-hot folded into the bias), so no
        masks and about half the first-layer work.

        ``checkpoint``: each pass keeps only its gathered inputs for the backward pass and recomputes
        its network there (``torch.utils.checkpoint``): ~7x less activation memory for the rate, for
        one more forward pass of the context network (used on GPUs, where memory is the limit).

        ``only``: the indices of the passes to count (None: all 8), for the sampled training rate."""
        total = q.new_zeros(())
        for ps, qg, cg in self.pass_inputs(q, coarse, r_lo, a, b, only):
            if checkpoint and torch.is_grad_enabled():
                bits = torch.utils.checkpoint.checkpoint(self._pass_net, qg, cg, level, ps, use_reentrant=False)
            else:
                bits = self._pass_net(qg, cg, level, ps)
            total = total + bits
        return total

    def pass_inputs(self, q: torch.Tensor, coarse: torch.Tensor | None, r_lo: int, a: int, b: int,
                    only: frozenset | None = None) -> list:
        """The gathered inputs of :meth:`pass_bits`, per pass ``(ps, qg, cg)`` (``ps`` a :class:`Pass`):
        they depend on the latents only, so a search over the network's weights gathers them once
        (``_pass_net`` each time)."""
        C = self.c
        co = coarse if coarse is not None else torch.zeros_like(q)
        qp = torch.nn.functional.pad(q, (1, 1, 1, 1, 1, 1))
        cp = torch.nn.functional.pad(co, (1, 1, 1, 1, 1, 1))
        B, D = q.shape[2:]
        plan, q_groups, c_groups = [], [], []
        for ps in pass_plan(self.coarse, C):
            if only is not None and ps.index not in only:
                continue
            pa, pb, pc = ps.phase
            s0 = a + ((pa - a) % 2) - r_lo          # first counted local row of this phase
            e0 = b - r_lo
            if s0 >= e0 or pb >= B or pc >= D:
                continue

            def at(u, v, w, s0=s0, e0=e0, pb=pb, pc=pc):
                return (slice(None), slice(1 + s0 + u, 1 + e0 + u, 2), slice(1 + pb + v, 1 + B + v, 2),
                        slice(1 + pc + w, 1 + D + w, 2))

            # this level: the latent itself, then its visible neighbours; the coarser grid: the
            # value here and its neighbours (one gather per grid, see _Gather)
            q_groups.append([at(0, 0, 0)] + [at(*o) for o in ps.same])
            c_groups.append([at(*o) for o in ps.coarse])
            plan.append(ps)
        if not plan:
            return []
        qf = _Gather.apply(qp, q_groups)
        cf = _Gather.apply(cp, c_groups)
        return list(zip(plan, qf, cf))

    def _pass_net(self, qg: torch.Tensor, cg: torch.Tensor, level: int, ps: Pass) -> torch.Tensor:
        """Bits of one pass ``ps`` from its gathered latents ``qg`` (the values, then their visible
        neighbours) and coarse features ``cg``."""
        C = self.c
        w1 = self.l1.weight
        x = qg[:C].flatten(1)
        f = torch.cat([cg, qg[C:]], 0).flatten(1)
        bias = self.l1.bias + w1[:, ps.flag]
        h = torch.addmm(bias[:, None], w1[:, list(ps.cols)], f).relu_()
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


def _auto_ctx_width(lmbda: float, nvox: int) -> int:
    """The context width when ``ctx_width`` is None: 24 at rates where the latents dominate the file
    (lambda <= 1e-3: about 0.4 bpv and up on 64^3) or on large volumes (>= 4 M voxels, where the
    network is a negligible share), else 16 (measured on mni_patch64, design-log-latent.md step 18)."""
    return 24 if (lmbda <= 1e-3 or nvox >= 1 << 22) else 16


def _make_ctx(n_levels: int, cfg: LatentConfig) -> ContextModel:
    return ContextModel(cfg.channels, cfg.ctx_width, n_levels, cfg.ctx_passes, cfg.ctx_layers, cfg.ctx_coarse)
