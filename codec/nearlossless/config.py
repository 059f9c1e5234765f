"""The ``nearlossless`` family's declaration: :class:`NearLosslessConfig`, its preset and :data:`FAMILY`
(torch-free, numpy-free)."""

from __future__ import annotations

from dataclasses import dataclass

from ..family import FamilySpec


@dataclass(frozen=True)
class NearLosslessConfig:
    """Guaranteed maximum absolute error ``max_error`` in stored units (0 = lossless)."""

    model: str = "nearlossless"
    max_error: float = 0.0
    seed: int = 0                   # unused (deterministic); kept so that --seed is harmless
    steps: int = 0                  # unused: there is no training
    predictor: str = "auto"         # "auto": the smaller of "interp" (payload v1) and "smooth" (payload v2)
    binning: str = "auto"           # E > 0: "auto" (the smaller), "loop" (in-loop bins) or "grid" (a fixed grid
                                    # that keeps the most frequent value, e.g. a zero background, exact)


PRESETS = {
    # guaranteed maximum error (no network): lossless by default, --max-error E for near-lossless
    "lossless": NearLosslessConfig(),
}

FAMILY = FamilySpec(name="nearlossless", config=NearLosslessConfig, presets=PRESETS,
                    model="inrv.codec.nearlossless.model:NearLosslessModel", uses_device=False)
