"""The ``paper`` family's declaration: :class:`PaperConfig`, its presets and :data:`FAMILY` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from ..family import FamilySpec


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


PRESETS: dict[str, PaperConfig] = {
    # the paper's trade-off point (DS 1/2, NC 4, SN 30), trained as in the paper
    "paper": PaperConfig(),
    # a few seconds on a CPU: for tests, smoke runs and the README demo
    "tiny": PaperConfig(steps=30, points_per_step=4096, attn_width=8, lr_prefit_steps=50),
}


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


def _normalise(overrides: dict[str, Any]) -> dict[str, Any]:
    if "ds" in overrides:
        overrides = dict(overrides, ds=normalise_ds(overrides["ds"]))
    return overrides


FAMILY = FamilySpec(name="paper", config=PaperConfig, presets=PRESETS, model="inrv.codec.paper.model:PaperModel",
                    normalise=_normalise)


def block_lr_size(lr_shape, ds, block: int) -> tuple[int, ...]:
    """Block size in low-res cells per axis: ``ceil(m / k)`` with ``k = ceil(m / (block // ds))`` blocks,
    i.e. at most ``block`` full-res voxels, spread evenly so the last block wastes few padded cells."""
    if not block:
        return tuple(int(m) for m in lr_shape)
    out = []
    for m, f in zip(lr_shape, ds):
        k = -(-int(m) // max(1, int(block) // int(f)))
        out.append(-(-int(m) // k))
    return tuple(out)
