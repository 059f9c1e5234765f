"""The ``paper`` family's model class: ``fit`` trains SIREN + SRNO on one volume and stores the
8-bit quantised weights; ``render`` rebuilds the network from them and decodes at any shape."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import FormatError, InputError
from ..base import Encoded, Progress
from ..config import config_from_payload
from .config import PaperConfig
from .downsample import lowres_shape
from .partition import _read_partition
from .slabs import _predict

# sanity limits for configs read back from files (a hostile file must not make us build a huge net)
_LIMITS = {"sn": 4096, "siren_layers": 64, "nc": 256, "res_blocks": 64, "attn_width": 1024, "attn_heads": 1024,
           "attn_blocks": 64, "mlp_width": 4096}
MAX_RENDER_VOXELS = 1 << 34


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
        """Train SIREN + SRNO end to end on one volume (the phases: :mod:`inrv.codec.paper.fit`)."""
        from ..device import resolve_device, tune_cpu_allocator
        from .fit import fit_volume

        if not isinstance(config, PaperConfig):
            raise InputError(f"the paper model needs a PaperConfig, got {type(config).__name__}")
        _check_config(config)
        arr = _as_volume(data)
        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        return fit_volume(arr, config, dev, progress)

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
