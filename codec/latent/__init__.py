"""The ``latent`` model family: coded multi-resolution latent grids + a tiny synthesis network.

In the spirit of Cool-chic / C3 (2D image codecs), adapted to 3D volumes and to a fully
parallel decoder. See ``docs/model-latent.md`` for the design, the measurements and the
bit-exactness argument. In short:

* **Latents.** ``L`` grids over the whole volume, level ``k`` of shape ``ceil(N / 2^k)`` per axis
  (an axis of length 1 stays 1, so thin and 2D volumes work), ``C`` channels each, stored as
  integers. They start as a Laplacian pyramid of the data; during training they are real
  numbers perturbed with uniform noise (first part of the schedule), then rounded with a
  straight-through gradient.
* **Synthesis.** Every level is upsampled to full resolution with separable linear interpolation
  (cell-centred, like ``align_corners=False``); the ``L*C`` values of a voxel go through a small
  per-voxel MLP, and latents + MLP channels through one 3x3x3 convolution -> one intensity in
  [0, 1]. Rendering works on slabs of the first axis (with a one-voxel halo), so memory is
  bounded by the slab, not the volume.
* **Entropy model.** A quantised Laplace per latent whose mean and scale come from a tiny MLP
  (shared by all levels, plus a per-level bias) fed with (a) the coarser level upsampled to this
  level (value and six face neighbours) and (b) the already decoded neighbours in the same level:
  by default the 8 sub-lattices of a 2x2x2 tiling are decoded one after the other (a latent sees
  those of its 26 neighbours in earlier passes); files without ``ctx_passes`` use a 3D
  checkerboard (2 passes). Either way decoding is a few vectorised passes per level (coarse to
  fine), no per-symbol loop.
* **Rate.** ``loss = MSE([0,1] data) + lmbda * bits / voxels``, bits from the differentiable
  Laplace likelihood (:func:`inrv.codec.entropy.laplace_bits`). The real rate is what the range
  coder writes (section ``latents``) plus the network weights (section ``synthesis``), which are
  entropy-coded too, each tensor at a step chosen by its measured rate-distortion cost
  (:mod:`inrv.codec.netcode`; files written before that hold fixed-precision affine weights).

The package, one module per job (read in this order)::

    grids.py       latent level shapes; linear / cubic upsampling (torch and the coder's numpy twin)
    context.py     coding-pass order and neighbours; ContextModel (the entropy model's network)
    synthesis.py   Synthesis (latents -> intensity); slab input with halo; a slab step's row windows
    coder.py       the exact coder: the context model in fixed-order float32 numpy + the range coder
    nets.py        network weight storage: entropy-coded per-tensor steps, or affine packing
    background.py  the background mask (blocks at the volume minimum, restored exactly)
    search.py      the lambda search for target_bpv / target_psnr
    model.py       LatentModel: fit (train, quantise, code) and render

Importing this package does not import torch: the names below are loaded from their module on
first use (``from inrv.codec.latent import LatentModel`` works as before the split).
"""

from __future__ import annotations

import importlib

# name -> module of this package that defines it (imported, with torch, on first use)
_EXPORTS = {
    "level_shapes": "grids",
    "_interp": "grids",
    "up_torch": "grids",
    "_interp_cubic": "grids",
    "up_cubic_torch": "grids",
    "up_numpy": "grids",
    "parity": "context",
    "_PASS_ORDER_8": "context",
    "_OFFSETS_26": "context",
    "pass_map": "context",
    "avail_table": "context",
    "_neigh26_torch": "context",
    "_FACES_6": "context",
    "_neigh_torch": "context",
    "_Gather": "context",
    "ContextModel": "context",
    "_auto_ctx_width": "context",
    "_make_ctx": "context",
    "Synthesis": "synthesis",
    "_synth_input": "synthesis",
    "_row_windows": "synthesis",
    "rate_rows": "synthesis",
    "_make_synth": "synthesis",
    "_CTX_DTYPE": "coder",
    "_np_context": "coder",
    "_np_affine": "coder",
    "_np_mlp": "coder",
    "_np_mids": "coder",
    "_gather_features": "coder",
    "_level_grid": "coder",
    "_flat_inner": "coder",
    "_code_pass": "coder",
    "code_latents": "coder",
    "_code_latents_8": "coder",
    "_code_8": "coder",
    "_GROUPS": "nets",
    "_group_of": "nets",
    "_arch_shapes": "nets",
    "pack_nets": "nets",
    "unpack_nets": "nets",
    "_decode_nets": "nets",
    "_choose_weight_steps": "nets",
    "background_blocks": "background",
    "expand_blocks": "background",
    "pack_blocks": "background",
    "unpack_blocks": "background",
    "search_lambda": "search",
    "BG_MIN_FRACTION": "model",
    "FORMAT_VERSION": "model",
    "_ARCH_FIELDS": "model",
    "soft_round": "model",
    "_kumaraswamy": "model",
    "LatentModel": "model",
    "_synthesise": "model",
}

__all__ = ["LatentModel", "FORMAT_VERSION", "ContextModel", "Synthesis", "code_latents", "level_shapes"]


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
