"""The ``latent`` model family: coded multi-resolution latent grids + a tiny synthesis network.

In the spirit of Cool-chic / C3 (2D image codecs), adapted to 3D volumes and to a fully
parallel decoder. See ``docs/model-latent.md`` for the design and the bit-exactness argument
(``docs/design-log-latent.md``: the measurements). In short:

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

    config.py      LatentConfig, presets, payload version and upgrades of older payloads (torch-free)
    passes.py      the entropy model's inputs, once: pass order, neighbours, per-pass feature columns
    grids.py       latent level shapes; linear / cubic upsampling (torch and the coder's numpy twin)
    context.py     ContextModel, the entropy model's network (and its pass-by-pass training rate)
    synthesis.py   Synthesis (latents -> intensity); slab input with halo; row windows; synthesise
    coder.py       the exact coder: the context model in fixed-order float32 numpy + the range coder
    rate.py        the training-side rate of the whole volume or of one slab step's rows
    nets.py        network weight storage: entropy-coded per-tensor steps, or affine packing
    background.py  the background mask (blocks at the volume minimum, restored exactly)
    fit.py         one fit, phase by phase on a FitState: prepare, train, quantise, polish, code
    search.py      the lambda search for target_bpv / target_psnr
    model.py       LatentModel: fit (checks, one fit or a search) and render

Importing this package does not import torch: the names below are loaded from their module on
first use (``from inrv.codec.latent import LatentModel`` works as before the split).
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__ = ["LatentModel", "FORMAT_VERSION", "ContextModel", "Synthesis", "code_latents", "level_shapes"]

# module of this package -> the names it defines (imported, with torch, on first use)
_EXPORTS = {
    "passes": ("parity", "_PASS_ORDER_8", "_OFFSETS_26", "_FACES_6", "pass_map", "avail_table", "n_features",
               "coarse_context", "Pass", "pass_plan"),
    "grids": ("level_shapes", "_interp", "up_torch", "_interp_cubic", "up_cubic_torch", "up_numpy"),
    "context": ("_neigh26_torch", "_neigh_torch", "_Gather", "ContextModel", "_auto_ctx_width", "_make_ctx"),
    "synthesis": ("Synthesis", "FG_CHUNK", "fg_box", "crop", "_synth_input", "_row_windows", "rate_rows", "_make_synth",
                  "synthesise"),
    "coder": ("_CTX_DTYPE", "_np_context", "_np_affine", "_np_mlp", "_np_mids", "_gather_features",
              "_level_grid", "_flat_inner", "_code_pass", "code_latents", "_code_latents_8", "_code_8"),
    "nets": ("_GROUPS", "_group_of", "_arch_shapes", "pack_nets", "unpack_nets", "_decode_nets",
             "_choose_weight_steps"),
    "background": ("background_blocks", "expand_blocks", "pack_blocks", "unpack_blocks"),
    "rate": ("level_bits", "rate_bits", "total_bits"),
    "quantiser": ("soft_round", "_kumaraswamy", "rounded"),
    "fit": ("BG_MIN_FRACTION", "_ARCH_FIELDS", "FitState", "fit_once", "prepare", "init_latents",
            "init_context", "lr_boost", "train", "quantise_networks", "polish", "stored_config", "code"),
    "search": ("search_lambda",),
    "config": ("LatentConfig", "FORMAT_VERSION", "_BEFORE", "upgrade", "FAMILY"),
    "model": ("LatentModel",),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
