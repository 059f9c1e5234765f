"""The ``latent`` family's model class: ``fit`` (training, quantising the networks, coding) and
``render`` (decoding the payload and synthesising the volume slab by slab)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from torch import nn

from ...errors import InputError, RunError, UnsupportedVersionError
from ..base import Encoded, Progress
from ..config import config_from_payload, config_to_dict
from .config import LatentConfig
from ..device import release_cpu_memory, resolve_device, seed_everything, tune_cpu_allocator
from ..entropy import laplace_bits
from .. import netcode
from .background import background_blocks, expand_blocks, pack_blocks, unpack_blocks
from .coder import code_latents
from .context import ContextModel, _auto_ctx_width, _make_ctx, pass_map
from .grids import level_shapes, up_cubic_torch, up_torch
from .nets import _arch_shapes, _choose_weight_steps, _decode_nets, pack_nets
from .search import search_lambda
from .synthesis import Synthesis, _make_synth, _row_windows, _synth_input, rate_rows


# version of this family's payload (config key "v"): 2 added entropy-coded network weights
# ("wq"/"wmax"), deeper context models and wider synthesis options; a reader refuses a newer one
# the background mask is used where its blocks cover at least this share of the voxels: on mni_t1
# (77 %) it gains 1.8 dB at 0.5 bpv; on mni_patch64 (7 %) there is little to gain and ~100 B to pay
BG_MIN_FRACTION = 0.2
FORMAT_VERSION = 3     # 3: files with a background mask (files without one are still written as 2)
# config fields the decoder needs; always written to Encoded.config
_ARCH_FIELDS = ("model", "levels", "channels", "synth_width", "synth_layers", "conv_channels", "ctx_width",
                "ctx_passes", "ctx_layers", "upsample")


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
            enc = search_lambda(self._fit_once, arr, cfg, dev, progress)
        enc.stats["seconds"] = round(time.time() - t0, 2)
        return enc

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
        from ..metrics import psnr
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
            cfg = config_from_payload(conf)     # older files: the defaults of their time (config.upgrade)
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
