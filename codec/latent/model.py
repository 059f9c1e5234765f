"""The ``latent`` family's model class: ``fit`` checks its input and runs one fit
(:mod:`.fit`) or a lambda search (:mod:`.search`); ``render`` decodes the payload and synthesises
the volume slab by slab."""

from __future__ import annotations

import time

import numpy as np

from ...errors import InputError, UnsupportedVersionError
from ..base import Encoded, Progress
from ..config import config_from_payload
from ..device import resolve_device, tune_cpu_allocator
from .background import unpack_blocks
from .coder import code_latents
from .config import FORMAT_VERSION, LatentConfig
from .context import pass_map
from .fit import fit_once
from .grids import level_shapes
from .nets import _decode_nets
from .search import search_lambda
from .synthesis import synthesise


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
            enc = fit_once(arr, cfg, dev, progress)
        else:
            enc = search_lambda(arr, cfg, dev, progress)
        enc.stats["seconds"] = round(time.time() - t0, 2)
        return enc

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
        return synthesise(ints, deq, cfg, orig, bgb, int(conf.get("bg_block") or 0), encoded.value_range, dev)
