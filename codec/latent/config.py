"""The ``latent`` family's declaration: :class:`LatentConfig`, its presets, the upgrade of configs
stored by older versions, and :data:`FAMILY` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..family import FamilySpec


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
    time_budget: float | None = None        # seconds for the whole encode (search included): training is
                                            # planned to end on time, ``steps`` is then only an upper bound
    rate_passes: int = 4            # noise phase: the training rate of the large levels counts this many of
                                    # the 8 coding passes, drawn at random each step (8 = all; training only)
    rate_checkpoint: bool | None = None     # recompute the context network in the backward pass (~7x less
                                            # rate activation memory, ~40 % slower rate); None = on CUDA only


PRESETS: dict[str, LatentConfig] = {
    # fast and balanced also stop at a time cap (3 and 10 minutes for the whole encode on the machine
    # that runs it): a cap that does not bind changes nothing (same steps, same bytes); one that binds
    # (a whole brain on a CPU) ends the schedule on time instead of running for hours
    "fast": LatentConfig(steps=600, polish_steps=30, time_budget=180.0),
    "balanced": LatentConfig(steps=2000, time_budget=600.0),
    "best": LatentConfig(steps=6000, polish_steps=200),
    # a few seconds on a CPU, for tests
    "latent-tiny": LatentConfig(steps=60, levels=4, synth_width=8, synth_layers=1, conv_channels=2, ctx_width=4,
                                polish_steps=5, search_iters=4),
}

#: version of this family's payload (config key "v"); a reader refuses a newer one. 1: the first;
#: 2 added entropy-coded network weights ("wq"/"wmax"), deeper context models and wider synthesis
#: options; 3: files with a background mask (files without one are still written as 2)
FORMAT_VERSION = 3

#: what a stored config without these fields meant (files written before they existed)
_BEFORE = {
    "ctx_passes": 2,            # before the 8-pass context: the checkerboard
    "upsample": "linear",       # before cubic synthesis upsampling
    "ctx_layers": 1,            # before deeper context models
}


def upgrade(conf: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the fields older payloads lack filled in with what they meant then."""
    return {**_BEFORE, **conf}


FAMILY = FamilySpec(name="latent", config=LatentConfig, presets=PRESETS, model="inrv.codec.latent.model:LatentModel",
                    upgrade=upgrade)


def level_shapes(shape: tuple[int, int, int], levels: int) -> list[tuple[int, int, int]]:
    """Grid shapes of the latent levels: ``ceil(n / 2^k)`` per axis, stopping early at 1^3."""
    out = []
    for k in range(levels):
        s = tuple(max(1, -(-n // (2 ** k))) for n in shape)
        if out and s == out[-1]:
            break
        out.append(s)
    return out
