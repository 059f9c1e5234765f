"""Fitting the latent model to one volume, phase by phase.

:func:`fit_once` runs the phases in order on one :class:`FitState` (the normalised volume, the
background mask, the latents and the two networks, and the few helpers every phase shares):

1. :func:`prepare`: normalise the data, find the background mask, build and initialise the
   latents (a Laplacian pyramid) and the networks;
2. :func:`train`: distortion + lambda * rate with noise / soft rounding, then hard rounding,
   keeping the best hard-rounding state;
3. :func:`quantise_networks`: store the networks (entropy-coded per-tensor steps, or affine
   packing) and load what the decoder will read;
4. :func:`polish`: a few latent-only steps for the quantised networks;
5. :func:`code`: range-code the latents, build the stored config, decode once through the
   decoder's own path and measure.

The module is a little over 500 lines because the five phases and their shared state read best in one place
(each phase function stays under 80 lines); the time budget's planning lives in ``codec/budget.py``, the
training quantiser (soft rounding, noise) in :mod:`~inrv.codec.latent.quantiser`.

lambda and steps are ``cfg.lmbda`` and ``cfg.steps``: the lambda search passes
``dataclasses.replace(cfg, lmbda=..., steps=...)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import RunError
from ..base import Encoded, Progress
from ..config import config_to_dict
from ..device import release_cpu_memory, seed_everything
from .. import netcode
from ..budget import Budget, Phases, ThreadChoice, TrainSchedule
from ..optim import Adam
from .background import background_blocks, expand_blocks, pack_blocks
from .coder import code_latents
from .config import FORMAT_VERSION, LatentConfig
from .context import ContextModel, _auto_ctx_width, _make_ctx, pass_map
from .grids import level_shapes, up_cubic_torch, up_torch
from .quantiser import rounded
from .nets import _arch_shapes, _cached_bits, _choose_weight_steps, _decode_nets, _rate_inputs, pack_nets
from .rate import rate_bits, total_bits
from .synthesis import FG_CHUNK, Synthesis, _make_synth, _row_windows, _synth_input, crop, fg_box, synthesise

# the background mask is used where its blocks cover at least this share of the voxels: on mni_t1
# (77 %) it gains 1.8 dB at 0.5 bpv; on mni_patch64 (7 %) there is little to gain and ~100 B to pay
BG_MIN_FRACTION = 0.2
# config fields the decoder needs; always written to Encoded.config
_ARCH_FIELDS = ("model", "levels", "channels", "synth_width", "synth_layers", "conv_channels", "ctx_width",
                "ctx_passes", "ctx_layers", "upsample")


# Under a time budget, coding, the decode check and the quality render are planned to take CODE_COST
# x a training step's time per voxel of the volume (measured on 64^3, model-latent.md "Encode cost");
# the weight-step search is planned from measures timed before training.
CODE_COST = 2.0


# the latents' and the entropy model's learning rate ``lr`` is the right one for LR_REF_STEPS steps; a
# shorter training moves them further per step: lr x sqrt(LR_REF_STEPS / steps), at most LR_MAX_BOOST x
# (measured on mni_patch64 at 150 steps: lr 1e-2 -> 3e-2 gained 1.5 dB at equal rate, model-latent.md)
LR_REF_STEPS = 2000
LR_MAX_BOOST = 4.0


def lr_boost(steps: float) -> float:
    """The factor on ``lr`` for a training of ``steps`` steps (1 from LR_REF_STEPS steps up)."""
    return min(LR_MAX_BOOST, max(1.0, math.sqrt(LR_REF_STEPS / max(1.0, steps))))


@dataclass
class FitState:
    """Everything the phases of one fit share.

    ``cfg`` is the config of this fit (lambda, steps, and ``ctx_width`` resolved); ``shape`` the
    volume as 3D (``orig_shape`` as given); ``x`` the data normalised to [0, 1] with
    ``value_range``; ``keep`` (bool, or None) the voxels outside the background mask ``bgb``;
    ``shapes`` the latent levels, ``lat`` the latents (parameters), ``ctx`` / ``syn`` the networks;
    ``slab`` the output rows per training step, ``gen`` the generator of every random draw,
    ``ckpt`` whether the rate recomputes the context network in the backward pass, ``pmaps`` the
    pass of every latent (checkerboard context only)."""

    cfg: LatentConfig
    dev: torch.device
    orig_shape: tuple[int, ...]
    shape: tuple[int, int, int]
    value_range: tuple[float, float]
    x: torch.Tensor
    nvox: int
    bgb: np.ndarray | None
    keep: torch.Tensor | None
    shapes: list[tuple[int, int, int]]
    ctx: ContextModel
    syn: Synthesis
    lat: list[nn.Parameter]
    slab: int
    gen: torch.Generator
    ckpt: bool
    pmaps: list[torch.Tensor] | None
    stored_like: LatentConfig | None = None
    plan: Budget | None = None              # a time budget (``cfg.time_budget``): see codec/budget.py
    phases: Phases | None = None
    sched: TrainSchedule | None = None
    search_plan: tuple | None = None        # (eval rows, stride, small, reserve seconds) under a budget
    loss: float = float("nan")
    train_seconds: float = 0.0
    skip_background: bool = True            # synthesis and distortion in the foreground's box only
    threads: dict | None = None             # under a budget: the thread count chosen and the step times
    _keep_np: np.ndarray | None = None

    def sqerr(self, pred: torch.Tensor, r0: int = 0, r1: int | None = None, box=None) -> torch.Tensor:
        """Mean squared error of ``pred`` against rows ``[r0, r1)``, background voxels left out.
        ``box`` ``(b0, b1, c0, c1)``: ``pred`` covers only these columns of the rows (everything
        outside them is background); the mean is still over all the voxels of the rows."""
        r1 = self.shape[0] if r1 is None else r1
        if box is None:
            e = (pred - self.x[r0:r1]) ** 2
            return torch.mean(e if self.keep is None else e * self.keep[r0:r1])
        b0, b1, c0, c1 = box
        e = (pred - self.x[r0:r1, b0:b1, c0:c1]) ** 2 * self.keep[r0:r1, b0:b1, c0:c1]
        return torch.sum(e) / ((r1 - r0) * self.shape[1] * self.shape[2])

    @property
    def skipping(self) -> bool:
        """Whether the synthesis and the distortion skip the background (a mask, and skipping on)."""
        return self.keep is not None and self.skip_background

    def box(self, r0: int, r1: int):
        """The smallest box of columns ``(b0, b1, c0, c1)`` that holds every voxel of rows ``[r0, r1)``
        outside the background mask (None if there is none; only where :attr:`skipping`). The
        synthesis and the distortion are computed in it only: the same loss and gradients as the
        whole rows, where only background (left out of the distortion) is skipped."""
        if self._keep_np is None:
            self._keep_np = self.keep.cpu().numpy()
        return fg_box(self._keep_np[r0:r1])

    def forward(self, qs, rows=None, win=None, box=None) -> torch.Tensor:
        """The synthesis of output ``rows`` (None: all) from latents ``qs`` (row windows ``win``),
        in the columns ``box`` only where given (see :meth:`box`)."""
        r0, r1 = (0, self.shape[0]) if rows is None else (int(rows[0]), int(rows[-1]) + 1)
        f = _synth_input(qs, self.shape, r0, r1, self.cfg.upsample, self.syn.halo, win)
        return self.syn(f if box is None else crop(f, box, self.syn.halo))

    def draw_rows(self):
        """The output rows of this step: a random slab, or None (the whole volume) when it fits."""
        if self.slab >= self.shape[0]:
            return None
        r0 = int(torch.randint(0, self.shape[0] - self.slab + 1, (1,), generator=self.gen))
        return np.arange(r0, r0 + self.slab)

    def windows(self, rows):
        """The latents a slab step reads, as row-window views of every level, and their
        (row count, first row) pairs; the whole latents when the step covers the volume."""
        if rows is None:
            return self.lat, None
        spans = _row_windows(self.shape, self.shapes, int(rows[0]), int(rows[-1]) + 1, self.syn.halo,
                             self.cfg.upsample)
        return ([p[:, lo_:hi_] for p, (lo_, hi_) in zip(self.lat, spans)],
                [(sh[0], lo_) for sh, (lo_, _) in zip(self.shapes, spans)])

    def step_terms(self, qs, noisy, rows, win, passes: int = 8):
        """Distortion of the synthesis from ``qs`` and rate of ``noisy`` on this step's rows
        (``passes``: see :func:`rate_bits`)."""
        r0, r1 = (0, self.shape[0]) if rows is None else (int(rows[0]), int(rows[-1]) + 1)
        if not self.skipping:
            dist = self.sqerr(self.forward(qs, rows, win), r0, r1)
        else:
            # background skipped: the rows in chunks of FG_CHUNK, each synthesised in the box of its
            # foreground only (a chunk of background alone is not synthesised at all)
            dist = 0.0
            for c0 in range(r0, r1, FG_CHUNK):
                c1 = min(r1, c0 + FG_CHUNK)
                box = self.box(c0, c1)
                if box is None:
                    continue
                pred = self.forward(qs, np.arange(c0, c1), win, box)
                dist = dist + self.sqerr(pred, c0, c1, box) * ((c1 - c0) / (r1 - r0))
        return dist, rate_bits(self, noisy, rows, win, passes)

    def load_nets(self, deq: dict[str, np.ndarray]) -> None:
        """Load dequantised network tensors (``syn.*`` / ``ctx.*``) into the two networks."""
        self.syn.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in deq.items() if k.startswith("syn.")})
        self.ctx.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in deq.items() if k.startswith("ctx.")})


def fit_once(arr: np.ndarray, cfg: LatentConfig, dev, progress: Progress | None = None,
             stored_like: LatentConfig | None = None, plan: Budget | None = None) -> Encoded:
    """One fit at ``cfg.lmbda`` for ``cfg.steps`` steps (or until ``plan``'s time is up).
    ``stored_like``: see :func:`stored_config`."""
    phases = Phases()
    threads = torch.get_num_threads()
    try:
        st = prepare(arr, cfg, dev, stored_like)
        st.plan, st.phases = plan, phases
        plan_search(st)
        phases.mark("setup")
        train(st, progress)
        phases.mark("train")
        payload, wmeta, deq = quantise_networks(st)
        phases.mark("weights")
        polish(st)
        phases.mark("polish")
        enc = code(st, arr, payload, wmeta, deq)
        phases.mark("code+check")
    finally:
        torch.set_num_threads(threads)      # a budgeted training may have chosen another count
    enc.stats["phase_seconds"] = phases.seconds
    if st.threads is not None:
        enc.stats["threads"] = st.threads
    return enc


def _search_inputs(st: FitState, hard, ev: int):
    """The weight-step search's two measures on a central slab of ``ev`` rows (the whole volume when
    it is all of it): the distortion of the synthesis and the latents' bits, for given weights. What
    does not depend on the weights is computed once (the same numbers as computing it each time)."""
    cfg, shape = st.cfg, st.shape
    r0m = (shape[0] - ev) // 2
    ev_rows = np.arange(r0m, r0m + ev) if ev < shape[0] else None
    syn_in = _synth_input(hard, shape, r0m, r0m + ev, cfg.upsample, st.syn.halo)
    box = st.box(r0m, r0m + ev) if st.skipping else None
    if box is not None:         # the foreground's box only (see FitState.box)
        syn_in = crop(syn_in, box, st.syn.halo)
    lat_in = _rate_inputs(st.ctx, hard, st.shapes, shape, ev_rows, cfg.max_voxels_per_step) \
        if cfg.ctx_passes == 8 else None

    def dist_of(deq):
        st.load_nets(deq)
        return float(st.sqerr(st.syn(syn_in), r0m, r0m + ev, box))

    def lat_bits_of(deq):
        st.load_nets(deq)
        if lat_in is not None:
            return _cached_bits(st.ctx, lat_in, ev_rows is not None)
        return float(rate_bits(st, hard, ev_rows)) if ev_rows is not None else total_bits(st, hard)
    return dist_of, lat_bits_of


def plan_search(st: FitState) -> None:
    """The weight-step search's slab (at most 2^19 voxels) and, under a budget, its planned cost: one
    measure of each kind is timed now, on the initial state; only a search that would take more than
    ~8 % of the budget is made cheaper (every third step, then the neighbours of the best; biases at 8x
    their finest step; at most 2^17 voxels), so a budget that does not bind changes nothing."""
    plane = max(1, st.shape[1] * st.shape[2])
    ev = max(1, min(st.slab, (1 << 19) // plane))
    st.search_plan = (ev, 1, 0, 0.0)
    if st.plan is None or st.cfg.weight_bits:
        return
    arch = _arch_shapes(len(st.shapes), st.cfg)
    n_syn = sum(1 for n in arch if n.startswith("syn."))
    n_ctx = len(arch) - n_syn
    with torch.no_grad():
        t0 = time.perf_counter()
        d_of, b_of = _search_inputs(st, [torch.round(p) for p in st.lat], ev)
        cur = {f"syn.{k}": v.detach().cpu().numpy() for k, v in st.syn.state_dict().items()}
        cur.update({f"ctx.{k}": v.detach().cpu().numpy() for k, v in st.ctx.state_dict().items()})
        t1 = time.perf_counter()
        d_of(cur)
        t2 = time.perf_counter()
        b_of(cur)
        t3 = time.perf_counter()
    full = (t1 - t0) + 13 * (n_syn * (t2 - t1) + n_ctx * (t3 - t2))
    if full <= 0.08 * st.plan.seconds:
        st.search_plan = (ev, 1, 0, full)
        return
    small_ev = max(1, min(st.slab, (1 << 17) // plane))
    f = small_ev / ev
    n_syn = sum(1 for n, sh in arch.items() if n.startswith("syn.") and math.prod(sh) > 64)
    n_ctx = sum(1 for n, sh in arch.items() if not n.startswith("syn.") and math.prod(sh) > 64)
    st.search_plan = (small_ev, 3, 64, (t1 - t0) * f + 9 * f * (n_syn * (t2 - t1) + n_ctx * (t3 - t2)))


def _polish_steps(st: FitState, t_step: float) -> int:
    if st.plan is None:
        return st.cfg.polish_steps
    # at most ~5 % of the budget on latent-only polishing
    return min(st.cfg.polish_steps, max(2, int(0.05 * st.plan.seconds / max(t_step, 1e-6))))


def _post_seconds(st: FitState, t_step: float) -> float:
    """Seconds the phases after training will take: the planned search, the polish, and coding with
    the decode check (``CODE_COST`` training steps per voxel of the volume)."""
    step_vox = min(st.shape[0], st.slab) * st.shape[1] * st.shape[2]
    return st.search_plan[3] + _polish_steps(st, t_step) * t_step + CODE_COST * st.nvox * t_step / step_vox


def prepare(arr: np.ndarray, cfg: LatentConfig, dev, stored_like: LatentConfig | None = None) -> FitState:
    """Phase 1: the normalised volume, the background mask, the latents and networks, initialised."""
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
    shapes = level_shapes(shape, cfg.levels)
    if cfg.ctx_width is None:
        # a wider context model codes the latents in ~6 % fewer bytes and costs ~0.7 kB more of
        # network: worth it where the latents dominate the file (design-log-latent.md, step 18)
        cfg = dataclasses.replace(cfg, ctx_width=_auto_ctx_width(cfg.lmbda, nvox))
    ctx = _make_ctx(len(shapes), cfg).to(dev)
    syn = _make_synth(len(shapes), cfg).to(dev)
    lat = [nn.Parameter(t) for t in init_latents(x, shapes, cfg, syn)]
    init_context(ctx, lat)
    return FitState(
        cfg=cfg, dev=dev, orig_shape=orig_shape, shape=shape, value_range=(lo, hi), x=x, nvox=nvox,
        bgb=bgb, keep=keep, shapes=shapes, ctx=ctx, syn=syn, lat=lat,
        slab=max(1, min(shape[0], cfg.max_voxels_per_step // max(1, shape[1] * shape[2]))),
        gen=torch.Generator(device="cpu").manual_seed(cfg.seed),
        # memory for time in the rate's backward pass: where memory is the limit (a GPU), by default
        ckpt=dev.type == "cuda" if cfg.rate_checkpoint is None else bool(cfg.rate_checkpoint),
        # coding pass of every latent: only the checkerboard context's training rate uses them
        pmaps=[torch.as_tensor(pass_map(sh, 2), device=dev) for sh in shapes] if cfg.ctx_passes == 2 else None,
        stored_like=stored_like)


def init_latents(x: torch.Tensor, shapes, cfg: LatentConfig, syn: Synthesis) -> list[torch.Tensor]:
    """Start from a Laplacian pyramid of the data instead of zeros (much faster convergence).

    Coarse to fine, each level holds the area-average of what the coarser levels miss, in
    units of a step ``delta``; the synthesis' linear path is set to ``delta`` for channel 0 of
    every level, so the initial decode is the pyramid sum. ``delta = init_scale *
    sqrt(6 lmbda / ln 2)`` is the high-rate optimum of a uniform quantiser for this lambda.
    """
    C = cfg.channels
    out = [torch.zeros((C,) + s, device=x.device) for s in shapes]
    if cfg.init_scale <= 0:
        return out
    delta = cfg.init_scale * math.sqrt(6.0 * cfg.lmbda / math.log(2.0))
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


def init_context(ctx: ContextModel, lat) -> None:
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


def train(st: FitState, progress: Progress | None = None) -> None:
    """Phase 2: ``cfg.steps`` Adam steps on ``MSE + lmbda * bits / voxels`` with a cosine learning
    rate; the best hard-rounding state is kept and restored (sets ``st.loss``, ``st.train_seconds``)."""
    cfg, lat, syn, ctx = st.cfg, st.lat, st.syn, st.ctx
    steps = cfg.steps
    # three speeds: latents (integer units), entropy model (log-scales, means), synthesis
    # (intensity units: a smaller step), and the linear path (weights ~ delta: smaller still)
    mlp = [p for n, p in syn.named_parameters() if not n.startswith("skip.")]
    opt = Adam([{"params": lat, "lr": cfg.lr},
                            {"params": list(ctx.parameters()), "lr": cfg.lr},
                            {"params": mlp, "lr": cfg.net_lr},
                            {"params": list(syn.skip.parameters()), "lr": cfg.net_lr * 0.05}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    # under a budget, the thread count of the steps is chosen by measurement (see ThreadChoice); a fit
    # without one keeps torch's (the same bytes on every run). Training then runs at least the steps
    # that measure both counts before the schedule trusts its step time.
    tc = ThreadChoice(torch.get_num_threads()) if st.plan is not None and st.dev.type == "cpu" else None
    sched = st.sched = TrainSchedule(steps, cfg.hard_frac, *(st.plan.training(lambda t: _post_seconds(st, t))
                                                             if st.plan else (None, None)),
                                     min_steps=ThreadChoice.FIRST_STEPS if tc and tc.tries_both else 2)
    if tc:
        sched.step_time = tc.best_seconds
    hard_from = sched.hard_from
    best: tuple = (math.inf, None, None, None)
    t_train = time.time()
    step = 0
    while sched.running(step):
        if tc:
            if step == ThreadChoice.FIRST_STEPS and tc.tries_both:
                # the weight-step search's cost was timed before training, with the first count:
                # timed again with the chosen one (it is part of what training must leave time for)
                torch.set_num_threads(tc.best())
                plan_search(st)
            torch.set_num_threads(tc.choose())
        pos = sched.pos(step)           # = step, unless a time budget drives the schedule
        lr_f = 0.5 * (1 + math.cos(math.pi * pos / max(1, steps)))
        boost = lr_boost(sched.expected_steps(step))
        for i, (g, b) in enumerate(zip(opt.param_groups, base_lrs)):
            g["lr"] = b * max(lr_f, 0.02) * (boost if i < 2 else 1.0)
        rows = st.draw_rows()
        # only the rows of every level this step reads are rounded and noised (large volumes)
        src, win = st.windows(rows)
        qs, noisy = rounded(st.cfg, src, pos, hard_from, st.gen, st.dev)
        # the noise phase may estimate the rate from a sample of the coding passes; the hard phase,
        # which picks the state that is kept, counts them all
        dist, bits = st.step_terms(qs, noisy, rows, win, cfg.rate_passes if pos < hard_from else 8)
        loss = dist + cfg.lmbda * bits / st.nvox
        st.loss = float(loss.detach())
        if pos >= hard_from and st.loss < best[0]:
            # hard-rounding loss is the true objective: keep the best state seen (the
            # straight-through phase can drift upwards late in training)
            best = (st.loss, [p.detach().clone() for p in lat],
                    {k: v.clone() for k, v in syn.state_dict().items()},
                    {k: v.clone() for k, v in ctx.state_dict().items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.tick()
        if tc:
            tc.record(sched.durations[-1])
        if progress and (step % 10 == 0 or step == steps - 1):
            info = {"loss": st.loss, "mse": float(dist.detach()), "bpv_est": float(bits.detach()) / st.nvox}
            if st.plan:
                st.plan.report(progress, info)
            else:
                progress(step + 1, steps, info)
        step += 1
    if tc:                  # the rest of the fit runs with the faster count too
        torch.set_num_threads(tc.best())
        st.threads = {"chosen": tc.best(), "step_seconds": {str(k): round(v, 3) for k, v in tc.medians().items()}}
    if step != steps:       # a time budget ended training early: the file records the steps done
        st.cfg = dataclasses.replace(st.cfg, steps=step)
    st.train_seconds = time.time() - t_train
    if best[1] is not None:
        with torch.no_grad():
            for p, b in zip(lat, best[1]):
                p.copy_(b)
        syn.load_state_dict(best[2])
        ctx.load_state_dict(best[3])
        st.loss = best[0]
    # the training state is no longer needed: free it before coding (3-4 floats per latent)
    del best
    opt.state.clear()
    for p in lat:
        p.grad = None
    release_cpu_memory()


def quantise_networks(st: FitState) -> tuple[bytes, dict, dict[str, np.ndarray]]:
    """Phase 3: the networks' payload (entropy-coded at per-tensor steps chosen by measured
    rate-distortion cost, or affine-packed at ``weight_bits``), its config entries, and the
    dequantised tensors, read back through the decoder's own path and loaded into the networks."""
    cfg, shape = st.cfg, st.shape
    state = {f"syn.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in st.syn.state_dict().items()}
    state.update({f"ctx.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in st.ctx.state_dict().items()})
    names = list(_arch_shapes(len(st.shapes), cfg))
    with torch.no_grad():
        hard = [torch.round(p) for p in st.lat]
        # a central slab of at most 2^19 voxels is enough to compare weight precisions (the
        # step search measures ~13 steps per tensor; 64^3 is measured whole): see plan_search
        ev, stride, small, _ = st.search_plan
        if cfg.weight_bits:
            # fixed-precision affine packing (the format before entropy-coded weights)
            payload, qmeta = pack_nets(state, int(cfg.weight_bits))
            wmeta = {"quant": qmeta}
        else:
            dist_of, lat_bits_of = _search_inputs(st, hard, ev)
            exps = _choose_weight_steps(state, names, dist_of, lat_bits_of, cfg.lmbda / st.nvox,
                                        stride=stride, small=small)
            payload, wq, wmax = netcode.encode([state[n] for n in names], [exps[n] for n in names])
            wmeta = {"wq": wq, "wmax": wmax}
        # the weights the decoder will use, through the decoder's own path
        deq = _decode_nets(payload, wmeta, cfg, len(st.shapes))
        st.load_nets(deq)
    return payload, wmeta, deq


def polish(st: FitState) -> None:
    """Phase 4: ``polish_steps`` latent-only steps (hard rounding) for the quantised networks."""
    st.polish_steps = _polish_steps(st, st.sched.step_seconds() if st.sched else 0.0)
    if st.polish_steps <= 0:
        return
    for p in list(st.syn.parameters()) + list(st.ctx.parameters()):
        p.requires_grad_(False)
    opt = Adam(st.lat, lr=st.cfg.lr * 0.05)
    for _ in range(st.polish_steps):
        rows = st.draw_rows()
        src, win = st.windows(rows)
        qs = [p + (torch.round(p) - p).detach() for p in src]
        dist, rb = st.step_terms(qs, qs, rows, win)
        loss = dist + st.cfg.lmbda * rb / st.nvox
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def stored_config(st: FitState, wmeta: dict, sym_range: list[int]) -> dict:
    """The config a file stores. Fixed overhead matters (1 kB = 0.03 bpv on 64^3): the architecture
    fields always; the training-only fields only where they differ from LatentConfig's defaults.

    Which training fields those are, and in which order, is read from ``st.stored_like`` when given
    (the caller's config in a lambda search: every fit of a search then stores the same fields in
    the same order as before lambda and steps travelled in the config); the values are this fit's."""
    cfg = st.cfg
    like = cfg if st.stored_like is None else dataclasses.replace(st.stored_like, ctx_width=cfg.ctx_width)
    defaults = config_to_dict(LatentConfig())
    mine = config_to_dict(cfg)
    conf = {k: mine[k] for k, v in config_to_dict(like).items()
            if k in _ARCH_FIELDS or (v is not None and v != defaults.get(k))}
    conf["lmbda"] = float(cfg.lmbda)
    conf["steps"] = int(cfg.steps)
    conf.pop("bg_block", None)
    conf.pop("rate_checkpoint", None)        # how it was trained, not how it decodes
    conf.pop("time_budget", None)
    conf.pop("rate_passes", None)
    if st.bgb is not None:
        conf["bg_block"] = int(cfg.bg_block)
    conf.update({"v": FORMAT_VERSION if st.bgb is not None else 2, "sym_range": sym_range, **wmeta})
    return conf


def code(st: FitState, arr: np.ndarray, payload: bytes, wmeta: dict, deq: dict[str, np.ndarray]) -> Encoded:
    """Phase 5: range-code the latents, assemble the :class:`Encoded`, decode it once through the
    decoder's own path (the latents must round-trip) and measure the reconstruction."""
    import msgpack

    from ..metrics import psnr

    cfg, C = st.cfg, st.cfg.channels
    with torch.no_grad():
        ints = [torch.round(p).detach().cpu().numpy().astype(np.int32) for p in st.lat]
        est_bits = total_bits(st, [torch.as_tensor(i, dtype=torch.float32, device=st.dev) for i in ints])
    sym_lo = int(min(int(i.min()) for i in ints))
    sym_hi = int(max(int(i.max()) for i in ints))
    if sym_hi == sym_lo:
        sym_hi = sym_lo + 1
    lat_bytes = code_latents(ints, deq, st.shapes, C, lo=sym_lo, hi=sym_hi, passes=cfg.ctx_passes)
    sections = {"latents": lat_bytes, "synthesis": payload}
    if st.bgb is not None:
        sections["background"] = pack_blocks(st.bgb)
    conf = stored_config(st, wmeta, [sym_lo, sym_hi])
    enc = Encoded(model="latent", config=conf, sections=sections, shape=st.orig_shape, value_range=st.value_range)
    # honest check: decode through the real path and measure
    dec_ints = code_latents(None, deq, st.shapes, C, data=lat_bytes, lo=sym_lo, hi=sym_hi, passes=cfg.ctx_passes)
    if any(not np.array_equal(a, b) for a, b in zip(ints, dec_ints)):
        raise RunError("internal error: entropy-coded latents do not round-trip")
    del ints
    release_cpu_memory()
    # the quality check renders from the latents just decoded (the decoder's own path from here)
    rec = enc.reconstruction = synthesise(dec_ints, deq, cfg, st.orig_shape, st.bgb, int(cfg.bg_block),
                                           st.value_range, st.dev)
    del dec_ints
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        rec = np.clip(np.rint(rec), info.min, info.max)
    cfg_bytes = len(msgpack.packb(conf, use_bin_type=True))
    sec = sum(len(b) for b in sections.values())
    enc.stats.update({
        "steps": int(cfg.steps), "lambda": float(cfg.lmbda), "device": str(st.dev),
        "train_seconds": round(st.train_seconds, 2),
        "latent_bytes": len(lat_bytes), "synthesis_bytes": len(payload), "config_bytes": cfg_bytes,
        "background_bytes": len(sections.get("background", b"")),
        "background_fraction": 0.0 if st.keep is None else float(1.0 - st.keep.float().mean()),
        "bits_estimated": round(est_bits, 1), "bits_actual": 8 * len(lat_bytes),
        "bpv_sections": 8.0 * sec / st.nvox, "bpv_total": 8.0 * (sec + cfg_bytes) / st.nvox,
        "psnr": float(psnr(arr, rec)), "final_loss": st.loss, "levels": len(st.shapes),
        "polish_steps": int(getattr(st, "polish_steps", cfg.polish_steps)),
        "step_seconds": round(st.sched.step_seconds(), 4) if st.sched else None,
    })
    return enc
