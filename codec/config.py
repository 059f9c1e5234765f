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
    steps: int = 5000
    lr: float = 1.5e-3
    points_per_step: int | None = 32768   # random HR query points per step; None = all
    lr_loss_weight: float = 1.0     # weight of the SIREN-vs-low-res loss beside the HR L1 loss
    weight_bits: int = 8            # quantisation of stored weights
    seed: int = 0


@dataclass(frozen=True)
class LatentConfig:
    """Coded latent grids decoded by a tiny synthesis network (Cool-chic/C3 style), trained on
    distortion + lambda * rate. ``target_bpv`` / ``target_psnr`` make the encoder search lambda."""

    model: str = "latent"
    lmbda: float = 1e-3
    steps: int = 2000
    lr: float = 1e-2
    target_bpv: float | None = None
    target_psnr: float | None = None
    seed: int = 0


Config = Union[PaperConfig, LatentConfig]

PRESETS: dict[str, Config] = {
    # the paper's trade-off point (DS 1/2, NC 4, SN 30), trained as in the paper
    "paper": PaperConfig(),
    # a few seconds on a CPU: for tests, smoke runs and the README demo
    "tiny": PaperConfig(steps=30, points_per_step=4096, attn_width=8),
}

DEFAULT_PRESET = "paper"


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
    cls = {"paper": PaperConfig, "latent": LatentConfig}.get(d.get("model"))
    if cls is None:
        raise UsageError(f"unknown model family {d.get('model')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return cls(**kw)
