"""The paper's model as a codec family: k-space downsampling -> SIREN on the low-res grid -> 3D SRNO.

``PaperModel().fit(array, PaperConfig(...))`` trains SIREN + SRNO end to end on one volume and returns
an :class:`~inrv.codec.base.Encoded` holding the 8-bit quantised weights; ``render`` rebuilds the
network from those bytes and decodes the volume on its own grid or at any other ``shape``.
See ``docs/model-paper.md`` for the design, measurements and departures from the paper.

Training: optionally ``lr_prefit_steps`` SIREN-only steps fitting the k-space low-res volume; then per
step the SIREN is evaluated on every low-res cell centre, giving the latent low-res
volume ``z``; the SRNO encoder turns ``z`` into features; ``points_per_step`` random full-res voxels
are decoded and compared with the data. Loss = ``L1(SR, data) + lr_loss_weight * L1(z, kspace_lr)``
where ``kspace_lr`` is the k-space downsampled volume. Data are normalised to [0, 1] with the
volume's (min, max); the decoded output is clipped to that range.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from .base import Encoded, Progress
from .config import PaperConfig, config_from_dict, config_to_dict
from .downsample import kspace_downsample, lowres_shape

# sanity limits for configs read back from files (a hostile file must not make us build a huge net)
_LIMITS = {"sn": 4096, "siren_layers": 64, "nc": 256, "res_blocks": 64, "attn_width": 1024, "attn_heads": 1024,
           "attn_blocks": 64, "mlp_width": 4096}
RENDER_CHUNK = 65536
MAX_RENDER_VOXELS = 1 << 34


def _build(cfg: PaperConfig):
    import torch
    from torch import nn

    from .siren import Siren
    from .srno import SRNO3D

    class PaperNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.siren = Siren(cfg.sn, cfg.siren_layers, cfg.omega0)
            self.srno = SRNO3D(cfg.nc, cfg.res_blocks, cfg.attn_width, cfg.attn_heads, cfg.attn_blocks, cfg.mlp_width)

        def lowres(self, lr_coords: torch.Tensor, lr_shape) -> torch.Tensor:
            return self.siren(lr_coords).reshape(tuple(lr_shape))

        def forward(self, lr_coords, lr_shape, coords, out_shape):
            """(latent low-res volume, decoded values at ``coords``)."""
            z = self.lowres(lr_coords, lr_shape)
            return z, self.srno(z, coords, out_shape)

    return PaperNet()


def count_params(cfg: PaperConfig) -> int:
    """Total parameters of SIREN + SRNO for ``cfg`` (closed form, see siren.py / srno.py)."""
    from .siren import siren_params
    from .srno import srno_params

    return siren_params(cfg.sn, cfg.siren_layers) + srno_params(cfg.nc, cfg.res_blocks, cfg.attn_width,
                                                                 cfg.attn_blocks, cfg.mlp_width)


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


def _predict(net, lr_shape, out_shape, device, chunk: int = RENDER_CHUNK) -> np.ndarray:
    """Decode the whole ``out_shape`` grid in chunks of ``chunk`` query points (normalised units)."""
    import torch

    from .siren import grid_coords, index_coords

    with torch.no_grad():
        lc = grid_coords(lr_shape, device=device)
        z = torch.cat([net.siren(lc[s:s + 4 * chunk]) for s in range(0, lc.shape[0], 4 * chunk)]).reshape(tuple(lr_shape))
        feat = net.srno.encoder(z)
        zf = z.reshape(-1)
        total = int(np.prod(out_shape))
        out = np.empty(total, dtype=np.float32)
        for s in range(0, total, chunk):
            idx = torch.arange(s, min(total, s + chunk), device=device)
            c = index_coords(idx, out_shape)
            out[s:s + len(idx)] = net.srno.query(feat, zf, lr_shape, c, out_shape).float().cpu().numpy()
    return out.reshape(out_shape)


class PaperModel:
    name = "paper"

    def fit(self, data: Any, config: PaperConfig, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded:
        import torch

        from .device import resolve_device, seed_everything
        from .quant import quantize_state
        from .siren import grid_coords

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
        seed_everything(config.seed)
        net = _build(config).to(dev)
        hr = torch.from_numpy(norm.reshape(-1)).to(dev)
        lr_t = torch.from_numpy(lr_target).to(dev)
        lr_coords = grid_coords(lr_shape, device=dev)
        total = hr.numel()
        pts = total if not config.points_per_step or config.points_per_step >= total else int(config.points_per_step)
        gen = torch.Generator(device=dev).manual_seed(int(config.seed))
        opt = torch.optim.Adam(net.parameters(), lr=float(config.lr))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        steps = int(config.steps)
        every = max(1, steps // 200)
        t0 = time.perf_counter()
        loss_v = float("nan")
        lam = float(config.lr_loss_weight)

        def train_step() -> float:
            """One optimiser step; returns the loss. With all query points (``pts == total``) the HR term
            is back-propagated in chunks of RENDER_CHUNK points: the same gradient, bounded memory."""
            from .siren import index_coords

            opt.zero_grad(set_to_none=True)
            z = net.lowres(lr_coords, lr_shape)
            feat = net.srno.encoder(z)
            zf = z.reshape(-1)
            if pts < total:
                chunks = [torch.randint(0, total, (pts,), device=dev, generator=gen)]
            else:
                chunks = [torch.arange(s, min(total, s + RENDER_CHUNK), device=dev) for s in range(0, total, RENDER_CHUNK)]
            value = 0.0
            for i, idx in enumerate(chunks):
                pred = net.srno.query(feat, zf, lr_shape, index_coords(idx, shape), shape)
                part = (pred - hr[idx]).abs().sum() / pts
                part.backward(retain_graph=i < len(chunks) - 1 or lam != 0)
                value += float(part.detach())
            if lam:
                extra = lam * (z - lr_t).abs().mean()
                extra.backward()
                value += float(extra.detach())
            opt.step()
            return value

        prefit = max(0, int(config.lr_prefit_steps))
        if prefit:
            # stage 1: fit the SIREN alone to the k-space low-res volume (cheap: no SRNO, low-res grid only)
            opt_s = torch.optim.Adam(net.siren.parameters(), lr=float(config.lr))
            for _ in range(prefit):
                opt_s.zero_grad(set_to_none=True)
                (net.lowres(lr_coords, lr_shape) - lr_t).abs().mean().backward()
                opt_s.step()
        for step in range(1, steps + 1):
            loss_v = train_step()
            if progress is not None and (step % every == 0 or step == steps):
                progress(step, steps, {"loss": loss_v})
        train_seconds = time.perf_counter() - t0

        float_state = {k: v.detach().cpu().numpy() for k, v in net.named_parameters()}
        if config.qat_steps > 0:
            # short quantisation-aware fine-tune: forward with fake-quantised weights, update the floats
            from torch.func import functional_call

            from .quant import fake_quantize
            from .siren import index_coords

            params = dict(net.named_parameters())
            opt_q = torch.optim.Adam(params.values(), lr=float(config.lr) * 0.1)
            for _ in range(int(config.qat_steps)):
                opt_q.zero_grad(set_to_none=True)
                fq = {k: fake_quantize(p, int(config.weight_bits)) for k, p in params.items()}
                idx = torch.randint(0, total, (pts,), device=dev, generator=gen)
                _, pred = functional_call(net, fq, (lr_coords, lr_shape, index_coords(idx, shape), shape))
                (pred - hr[idx]).abs().mean().backward()
                opt_q.step()
        peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0

        recon_float = _predict(net, lr_shape, shape, dev)
        payload, meta = quantize_state({k: v.detach().cpu().numpy() for k, v in net.named_parameters()},
                                       int(config.weight_bits))
        cfg_dict = config_to_dict(config)
        cfg_dict.update({"lr_shape": list(lr_shape), "quant": meta})
        enc = Encoded(model=self.name, config=cfg_dict, sections={"weights": payload}, shape=shape,
                      value_range=(lo, hi), stats={})
        recon_q = (self.render(enc, device=str(dev)) - lo) / span
        float_psnr = _psnr01(norm, np.clip(recon_float, 0, 1))
        enc.stats = {
            "steps": steps, "train_seconds": train_seconds, "device": str(dev), "params": sum(int(v.size) for v in float_state.values()), "loss": loss_v,
            "points_per_step": pts, "psnr_float": float_psnr, "psnr_quantised": _psnr01(norm, recon_q),
            "peak_gpu_bytes": peak, "lr_shape": list(lr_shape),
        }
        return enc

    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray:
        import torch

        from .device import resolve_device
        from .quant import dequantize_state

        if encoded.model != self.name:
            raise FormatError(f"not a paper-model stream: {encoded.model!r}")
        try:
            cfg = config_from_dict(encoded.config)
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
        dev = resolve_device(device)
        net = _build(cfg)
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
        y = np.clip(_predict(net, lr_shape, out_shape, dev), 0.0, 1.0)
        return (y * (hi - lo) + lo).astype(np.float32)


def _psnr01(ref: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - test) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
