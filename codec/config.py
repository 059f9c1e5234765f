"""Encoder configurations: one small frozen dataclass per model family, and named presets.

``make_config("paper", steps=200)`` returns the ``paper`` preset with ``steps`` replaced.
Every field is a plain value so that a config is msgpack-able (``dataclasses.asdict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

from ..errors import UsageError


@dataclass(frozen=True)
class PaperConfig:
    """The paper's model: k-space downsampling -> SIREN on the low-res grid -> 3D SRNO.

    ``ds`` is the downsampling factor per array axis (2 = the paper's scale 1/2); the paper's
    trade-off point is ds=(2, 2, 2), nc=4, sn=30.
    """

    model: str = "paper"
    ds: tuple[int, int, int] = (2, 2, 2)
    nc: int = 4                     # channels of the SRNO conv feature extractor
    sn: int = 30                    # neurons per SIREN layer
    siren_layers: int = 3           # sine layers
    omega0: float = 30.0
    res_blocks: int = 2             # EDSR-style residual blocks in the feature extractor
    attn_width: int = 16            # Galerkin attention width
    attn_heads: int = 2
    attn_blocks: int = 2
    mlp_width: int = 32             # hidden width of the SRNO output MLP
    steps: int = 5000
    lr: float = 1.5e-3
    points_per_step: int | None = 32768   # random HR query points per step; None = all
    lr_loss_weight: float = 0.0     # weight of the SIREN-vs-low-res L1 loss beside the HR L1 loss (docs/model-paper.md)
    lr_prefit_steps: int = 500      # SIREN-only steps fitting the k-space low-res volume before end-to-end training
    weight_bits: int = 8            # quantisation of stored weights (2..16)
    qat_steps: int = 0              # quantisation-aware fine-tune steps after training (0 = off)
    seed: int = 0
    block: int = 64                 # block edge in full-res voxels: one SIREN per block (0 = one SIREN for all)
    max_lr_cells: int = 1 << 21     # low-res cells per training step / decode slab (bounds memory)
    amp: bool = True                # bf16 autocast for the SRNO on CUDA (SIREN stays fp32)


@dataclass(frozen=True)
class LatentConfig:
    """Coded latent grids decoded by a tiny synthesis network (Cool-chic/C3 style), trained on
    distortion + lambda * rate. ``target_bpv`` / ``target_psnr`` make the encoder search lambda."""

    model: str = "latent"
    lmbda: float = 1e-3             # rate weight: loss = MSE([0,1] data) + lmbda * bits / voxels
    steps: int = 2000
    lr: float = 1e-2                # Adam learning rate of the latents (cosine decay)
    target_bpv: float | None = None     # search lmbda for this rate (bits per voxel, sections + config)
    target_psnr: float | None = None    # ... or for this PSNR (dB)
    seed: int = 0
    levels: int = 7                 # latent grids at full, 1/2, 1/4 ... resolution
    channels: int = 1               # latent channels per level
    synth_width: int = 16           # synthesis MLP hidden width
    synth_layers: int = 1           # synthesis MLP hidden layers
    conv_channels: int = 4          # channels into the synthesis' final 3x3x3 convolution
    synth_kernel: int = 3           # kernel of the synthesis' final convolution (3 or 5)
    synth_convs: int = 1            # 2: one more 3x3x3 ReLU convolution on the MLP channels before the final one
    upsample: str = "linear"        # latent upsampling into the synthesis: "linear" or "cubic" (Keys)
    ctx_passes: int = 8             # entropy-model coding passes per level: 2 (checkerboard) or 8 (2x2x2 sub-lattices)
    ctx_width: int | None = None    # entropy-model (context) MLP hidden width; None = 24 where the latents
                                    # dominate the file (lmbda <= 1e-3 or >= 4 M voxels), else 16
    ctx_layers: int = 3             # entropy-model hidden layers (1-4; those after the first are residual)
    ctx_coarse: int = 7             # coarser-level context per latent: 7 (value + 6 face neighbours) or 27
                                    # (its whole 3x3x3 neighbourhood; 8-pass context only)
    net_lr: float = 2e-3            # Adam learning rate of the synthesis network
    hard_frac: float = 0.2          # last fraction of steps trained with hard (straight-through) rounding
    polish_steps: int = 50          # latent-only steps after the networks are quantised
    weight_bits: int | None = None  # network weight precision (2..16); None = 8, 10 or 12, whichever costs least
    search_steps: int | None = None     # steps per lambda-search fit (None: same as steps)
    search_iters: int = 6           # lambda-search fits at most
    max_voxels_per_step: int = 1 << 22  # larger volumes train on random slabs of the first axis
    soft_round: bool = True         # noise phase: C3-style annealed soft rounding (+ noise); False = noise alone
    soft_t0: float = 0.3            # soft-rounding temperature at the start ...
    noise_a0: float = 1.0           # soft-rounding phase: Kumaraswamy noise shape at the start, annealed to 1 (uniform)
    soft_t1: float = 0.1            # ... and at the switch to hard rounding (geometric annealing)
    init_scale: float = 1.0         # latents start as a Laplacian pyramid with step ~ sqrt(lmbda); 0 = zeros
    bg_block: int = 4               # > 0: blocks of this edge whose voxels all equal the volume minimum are
                                    # coded as a bit mask and restored exactly, where they cover at least
                                    # 20 % of the volume (0 = never)
    rate_checkpoint: bool | None = None     # recompute the context network in the backward pass (~7x less
                                            # rate activation memory, ~40 % slower rate); None = on CUDA only


from .nearlossless import NearLosslessConfig  # noqa: E402  (the family owns its config class)

Config = Union[PaperConfig, LatentConfig, NearLosslessConfig]

PRESETS: dict[str, Config] = {
    # the paper's trade-off point (DS 1/2, NC 4, SN 30), trained as in the paper
    "paper": PaperConfig(),
    # a few seconds on a CPU: for tests, smoke runs and the README demo
    "tiny": PaperConfig(steps=30, points_per_step=4096, attn_width=8, lr_prefit_steps=50),
    # latent family (coded latent grids + tiny synthesis; rate set by lmbda or target_bpv/psnr)
    "fast": LatentConfig(steps=600, polish_steps=30),
    "balanced": LatentConfig(steps=2000),
    "best": LatentConfig(steps=6000, polish_steps=200),
    # a few seconds on a CPU, for tests
    "latent-tiny": LatentConfig(steps=60, levels=4, synth_width=8, synth_layers=1, conv_channels=2, ctx_width=4,
                                polish_steps=5, search_iters=4),
    # guaranteed maximum error (no network): lossless by default, --max-error E for near-lossless
    "lossless": NearLosslessConfig(),
}

# the best rate-distortion by default; the paper's model stays one option away (--preset paper, --ds/--nc/--sn)
DEFAULT_PRESET = "balanced"


def make_config(preset: str | Config | None = None, **overrides: Any) -> Config:
    """Return a preset (by name, or a config object) with ``overrides`` applied.

    Overrides whose value is ``None`` are ignored, so CLI options can be passed through as-is.
    Unknown names raise :class:`~inrv.errors.UsageError`.
    """
    if preset is None:
        preset = DEFAULT_PRESET
    if isinstance(preset, str):
        try:
            base = PRESETS[preset]
        except KeyError:
            raise UsageError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})") from None
    else:
        base = preset
    changes = {k: v for k, v in overrides.items() if v is not None}
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise UsageError(f"option(s) {', '.join(unknown)} do not apply to the {base.model!r} model")
    if "ds" in changes:
        changes["ds"] = normalise_ds(changes["ds"])
    return dataclasses.replace(base, **changes)


def normalise_ds(ds: Any) -> tuple[int, int, int]:
    """Accept 2, "2", "1/2", "2,2,1" or (2, 2, 1) and return a per-axis factor tuple."""
    if isinstance(ds, str):
        parts = [p.strip() for p in ds.split(",")]
        vals = []
        for p in parts:
            if p.startswith("1/"):
                p = p[2:]
            try:
                vals.append(int(p))
            except ValueError:
                raise UsageError(f"bad downsampling factor {ds!r}: use 2, 4, 8, 1/2 or per axis 2,2,1") from None
        ds = vals
    if isinstance(ds, int):
        ds = (ds, ds, ds)
    ds = tuple(int(v) for v in ds)
    if len(ds) == 1:
        ds = ds * 3
    if len(ds) != 3 or any(v not in (1, 2, 4, 8) for v in ds):
        raise UsageError(f"bad downsampling factor {ds!r}: each axis must be 1, 2, 4 or 8")
    return ds  # type: ignore[return-value]


def config_to_dict(config: Config) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def config_from_dict(d: dict[str, Any]) -> Config:
    cls = {"paper": PaperConfig, "latent": LatentConfig, "nearlossless": NearLosslessConfig}.get(d.get("model"))
    if cls is None:
        raise UsageError(f"unknown model family {d.get('model')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return cls(**kw)
