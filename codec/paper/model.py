"""The ``paper`` family's model class: ``fit`` trains SIREN + SRNO on one volume and stores the
8-bit quantised weights; ``render`` rebuilds the network from them and decodes at any shape."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ...errors import FormatError, InputError
from ..base import Encoded, Progress
from ..config import config_from_payload, config_to_dict
from .config import PaperConfig
from .downsample import kspace_downsample, lowres_shape
from .partition import _read_partition, make_partition
from . import slabs
from .slabs import _amp, _predict, _query_window, _slab_rows, _window, halo_rows

# sanity limits for configs read back from files (a hostile file must not make us build a huge net)
_LIMITS = {"sn": 4096, "siren_layers": 64, "nc": 256, "res_blocks": 64, "attn_width": 1024, "attn_heads": 1024,
           "attn_blocks": 64, "mlp_width": 4096}
MAX_RENDER_VOXELS = 1 << 34
FLOAT_PSNR_VOXELS = 1 << 22


def _check_config(cfg: PaperConfig) -> None:
    for name, hi in _LIMITS.items():
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise InputError(f"paper model option {name}={v!r} out of range 1..{hi}")
    if cfg.attn_width % cfg.attn_heads:
        raise InputError(f"attn_width {cfg.attn_width} must be divisible by attn_heads {cfg.attn_heads}")
    ds = cfg.ds
    if not (isinstance(ds, (tuple, list)) and len(ds) == 3 and all(isinstance(f, int) and 1 <= f <= 64 for f in ds)):
        raise InputError(f"ds must be 3 factors in 1..64, got {ds!r}")
    if not isinstance(cfg.steps, int) or cfg.steps < 0 or not isinstance(cfg.lr_prefit_steps, int) \
            or cfg.lr_prefit_steps < 0 or not isinstance(cfg.qat_steps, int) or cfg.qat_steps < 0:
        raise InputError("steps, lr_prefit_steps and qat_steps must be integers >= 0")
    if cfg.points_per_step is not None and (not isinstance(cfg.points_per_step, int) or cfg.points_per_step < 0):
        raise InputError(f"points_per_step must be a positive integer or None, got {cfg.points_per_step!r}")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise InputError(f"lr must be a positive number, got {cfg.lr!r}")
    if not (isinstance(cfg.lr_loss_weight, (int, float)) and math.isfinite(cfg.lr_loss_weight) and cfg.lr_loss_weight >= 0):
        raise InputError(f"lr_loss_weight must be a number >= 0, got {cfg.lr_loss_weight!r}")
    if not isinstance(cfg.block, int) or isinstance(cfg.block, bool) or not 0 <= cfg.block <= 1 << 20:
        raise InputError(f"block must be 0 (one SIREN) or a block edge in voxels, got {cfg.block!r}")
    if not isinstance(cfg.max_lr_cells, int) or cfg.max_lr_cells < 1:
        raise InputError(f"max_lr_cells must be a positive integer, got {cfg.max_lr_cells!r}")
    if not 2 <= int(cfg.weight_bits) <= 16:
        raise InputError(f"weight_bits must be 2..16, got {cfg.weight_bits}")
    if not (isinstance(cfg.omega0, (int, float)) and math.isfinite(cfg.omega0) and cfg.omega0 > 0):
        raise InputError(f"omega0 must be a positive number, got {cfg.omega0!r}")


def _as_volume(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise InputError(f"expected a 3D volume, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise InputError(f"empty volume {tuple(arr.shape)}")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"unsupported voxel type {arr.dtype}: need real numbers")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise InputError("the volume holds NaN or infinite values")
    return arr


class PaperModel:
    name = "paper"

    def fit(self, data: Any, config: PaperConfig, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded:
        import torch

        from .network import _build
        from ..device import resolve_device, seed_everything, tune_cpu_allocator
        from ..quant import quantize_state

        if not isinstance(config, PaperConfig):
            raise InputError(f"the paper model needs a PaperConfig, got {type(config).__name__}")
        _check_config(config)
        arr = _as_volume(data)
        shape = tuple(int(s) for s in arr.shape)
        ds = tuple(int(f) for f in config.ds)
        lr_shape = lowres_shape(shape, ds)
        lo, hi = float(arr.min()), float(arr.max())
        span = hi - lo if hi > lo else 1.0
        norm = (arr - lo) / span
        lr_target = kspace_downsample(norm, ds)

        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        seed_everything(config.seed)
        part = make_partition(norm, lr_shape, ds, int(config.block))
        net = _build(config, part).to(dev)
        hr = torch.from_numpy(norm.reshape(-1)).to(dev)
        lr_t = torch.from_numpy(lr_target).to(dev)
        total = hr.numel()
        m0, m1, m2 = lr_shape
        n0, plane = shape[0], shape[1] * shape[2]
        halo = halo_rows(config)
        whole = m0 * m1 * m2 <= int(config.max_lr_cells)
        # windowed training (large volumes): a random slab of low-res rows per step, thick enough to
        # hold max_lr_cells cells with the encoder's halo; loss points come from the slab's core only
        core_t = m0 if whole else max(1, int(config.max_lr_cells) // (m1 * m2) - 2 * halo - 1)
        pts_cap = total if whole else min(total, core_t * int(math.ceil(n0 / m0)) * plane)
        pts = pts_cap if not config.points_per_step or config.points_per_step >= pts_cap else int(config.points_per_step)
        gen = torch.Generator(device=dev).manual_seed(int(config.seed))
        rng = np.random.default_rng(int(config.seed))
        opt = torch.optim.Adam(net.parameters(), lr=float(config.lr))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        steps = int(config.steps)
        every = max(1, steps // 200)
        t0 = time.perf_counter()
        loss_v = float("nan")
        lam = float(config.lr_loss_weight)
        amp = _amp(dev, config)

        def pick_window():
            """(e0, e1, r0, r1): low-res window rows and the full-res rows whose loss it can give exactly."""
            if whole:
                return 0, m0, 0, n0
            while True:
                c0 = int(rng.integers(0, max(1, m0 - core_t + 1)))
                c1 = min(m0, c0 + core_t)
                r0, r1 = _slab_rows(m0, n0, c0, c1)
                if r1 > r0:
                    e0, e1 = _window(m0, c0, c1, halo)
                    return e0, e1, r0, r1

        def loss_on(params_net, e0, e1, r0, r1, chunks, npts):
            """Forward + backward of the HR L1 (and low-res L1) terms; returns the loss value."""
            z = params_net.lowres_rows(e0, e1, lr_shape)
            with amp:
                feat = params_net.srno.encoder(z)
            zf = z.reshape(-1)
            value = 0.0
            for i, idx in enumerate(chunks):
                with amp:
                    pred = _query_window(params_net, feat, zf, e0, e1 - e0, lr_shape, idx, shape).float()
                part_l = (pred - hr[idx]).abs().sum() / npts
                part_l.backward(retain_graph=i < len(chunks) - 1 or lam != 0)
                value += float(part_l.detach())
            if lam:
                extra = lam * (z - lr_t[e0:e1]).abs().mean()
                extra.backward()
                value += float(extra.detach())
            return value

        def sample(r0, r1, npts):
            lo_i, hi_i = r0 * plane, r1 * plane
            if npts < hi_i - lo_i:
                return [lo_i + torch.randint(0, hi_i - lo_i, (npts,), device=dev, generator=gen)]
            chunk = slabs.RENDER_CHUNK
            return [torch.arange(s, min(hi_i, s + chunk), device=dev) for s in range(lo_i, hi_i, chunk)]

        def train_step() -> float:
            """One optimiser step; returns the loss. With all query points the HR term is
            back-propagated in chunks of RENDER_CHUNK points: the same gradient, bounded memory."""
            opt.zero_grad(set_to_none=True)
            e0, e1, r0, r1 = pick_window()
            npts = min(pts, (r1 - r0) * plane)
            value = loss_on(net, e0, e1, r0, r1, sample(r0, r1, npts), npts)
            opt.step()
            return value

        siren_params = [p for n, p in net.named_parameters() if not n.startswith("srno.")]
        has_siren = part.legacy or bool(part.active.any())
        prefit = max(0, int(config.lr_prefit_steps)) if has_siren else 0
        if prefit:
            # stage 1: fit the SIREN(s) alone to the k-space low-res volume (cheap: no SRNO, low-res grid only)
            opt_s = torch.optim.Adam(siren_params, lr=float(config.lr))
            for _ in range(prefit):
                e0, e1, _, _ = pick_window()
                opt_s.zero_grad(set_to_none=True)
                (net.lowres_rows(e0, e1, lr_shape) - lr_t[e0:e1]).abs().mean().backward()
                opt_s.step()
        for step in range(1, steps + 1):
            loss_v = train_step()
            if progress is not None and (step % every == 0 or step == steps):
                progress(step, steps, {"loss": loss_v})
        train_seconds = time.perf_counter() - t0

        float_state = {k: v.detach().cpu().numpy() for k, v in net.named_parameters()}
        if config.qat_steps > 0:
            # short quantisation-aware fine-tune: forward with fake-quantised weights, update the floats
            from ..quant import fake_quantize

            params = dict(net.named_parameters())
            opt_q = torch.optim.Adam(params.values(), lr=float(config.lr) * 0.1)
            saved = {k: p.detach().clone() for k, p in params.items()}
            for _ in range(int(config.qat_steps)):
                opt_q.zero_grad(set_to_none=True)
                # swap in the fake-quantised values, take the gradient there, apply it to the floats
                with torch.no_grad():
                    for k, p in params.items():
                        saved[k].copy_(p)
                        p.copy_(fake_quantize(p, int(config.weight_bits)))
                e0, e1, r0, r1 = pick_window()
                npts = min(pts, (r1 - r0) * plane)
                loss_on(net, e0, e1, r0, r1, sample(r0, r1, npts), npts)
                with torch.no_grad():
                    for k, p in params.items():
                        p.copy_(saved[k])
                opt_q.step()
        peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0

        # the float model's PSNR costs one more full decode: only for volumes up to FLOAT_PSNR_VOXELS
        recon_float = _predict(net, lr_shape, shape, dev, cfg=config) if total <= FLOAT_PSNR_VOXELS else None
        payload, meta = quantize_state({k: v.detach().cpu().numpy() for k, v in net.named_parameters()},
                                       int(config.weight_bits))
        cfg_dict = config_to_dict(config)
        cfg_dict.update({"lr_shape": list(lr_shape), "quant": meta})
        sections = {"weights": payload}
        if not part.legacy:
            cfg_dict["partition"] = part.to_config()
            sections["blockmap"] = part.section()
        enc = Encoded(model=self.name, config=cfg_dict, sections=sections, shape=shape,
                      value_range=(lo, hi), stats={})
        recon_q = self.render(enc, device=str(dev))
        enc.reconstruction = recon_q
        float_psnr = None if recon_float is None else _psnr01(norm, np.clip(recon_float, 0, 1))
        del recon_float
        enc.stats = {
            "steps": steps, "train_seconds": train_seconds, "device": str(dev), "params": sum(int(v.size) for v in float_state.values()), "loss": loss_v,
            "points_per_step": pts, "psnr_float": float_psnr, "psnr_quantised": _psnr01(norm, recon_q, lo, span),
            "peak_gpu_bytes": peak, "lr_shape": list(lr_shape),
            "blocks": part.nblocks, "active_blocks": int(part.active.sum()),
        }
        return enc

    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray:
        import torch

        from .network import _build
        from ..device import resolve_device, tune_cpu_allocator
        from ..quant import dequantize_state

        if encoded.model != self.name:
            raise FormatError(f"not a paper-model stream: {encoded.model!r}")
        try:
            cfg = config_from_payload(encoded.config)
        except (TypeError, ValueError) as e:
            raise FormatError(f"bad paper-model config: {e}") from None
        if not isinstance(cfg, PaperConfig):
            raise FormatError("paper stream with a non-paper config")
        try:
            _check_config(cfg)
            src_shape = tuple(int(s) for s in encoded.shape)
            if len(src_shape) != 3 or min(src_shape) < 1:
                raise InputError(f"bad fitted shape {encoded.shape!r}")
            lr_shape = lowres_shape(src_shape, tuple(int(f) for f in cfg.ds))
        except (InputError, TypeError, ValueError) as e:
            raise FormatError(f"bad paper-model config: {e}") from None
        if list(lr_shape) != list(encoded.config.get("lr_shape", [])):
            raise FormatError(f"paper stream: low-res shape {encoded.config.get('lr_shape')} does not match {lr_shape}")
        out_shape = src_shape if shape is None else tuple(int(s) for s in shape)
        if len(out_shape) != 3 or min(out_shape) < 1:
            raise InputError(f"output shape must be 3 positive sizes, got {shape!r}")
        if math.prod(out_shape) > MAX_RENDER_VOXELS:
            raise InputError(f"output shape {out_shape} exceeds {MAX_RENDER_VOXELS} voxels")
        if "weights" not in encoded.sections:
            raise FormatError("paper stream has no 'weights' section")
        state = dequantize_state(encoded.sections["weights"], encoded.config.get("quant"))
        part = _read_partition(encoded, cfg, lr_shape)
        if part is not None and int(part.active.sum()) > len(encoded.sections["weights"]):
            raise FormatError("paper stream: more blocks than stored weights")
        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        net = _build(cfg, part)
        own = dict(net.named_parameters())
        if set(own) != set(state) or any(tuple(own[k].shape) != state[k].shape for k in own):
            raise FormatError("paper stream: stored weights do not match the architecture in its config")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(torch.from_numpy(state[k]))
        net = net.to(dev).eval()
        lo, hi = (float(v) for v in encoded.value_range)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            raise FormatError(f"bad value range {encoded.value_range!r}")
        if hi == lo:
            return np.full(out_shape, lo, dtype=np.float32)
        y = _predict(net, lr_shape, out_shape, dev, cfg=cfg)
        np.clip(y, 0.0, 1.0, out=y)     # in place: no volume-sized temporaries
        y *= np.float32(hi - lo)
        y += np.float32(lo)
        return y


def _psnr01(ref: np.ndarray, test: np.ndarray, lo: float = 0.0, span: float = 1.0) -> float:
    """PSNR of [0, 1] data ``ref`` against ``(test - lo) / span``, accumulated over slabs (no volume-sized
    temporaries)."""
    sq = 0.0
    for i in range(0, ref.shape[0], 8):
        t = test[i:i + 8]
        if lo != 0.0 or span != 1.0:
            t = (t - np.float32(lo)) / np.float32(span)
        d = ref[i:i + 8].astype(np.float64) - t
        sq += float(np.sum(d * d))
    mse = sq / max(1, ref.size)
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
