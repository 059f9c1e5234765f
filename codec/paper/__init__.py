"""The paper's model as a codec family: k-space downsampling -> SIREN on the low-res grid -> 3D SRNO.

``PaperModel().fit(array, PaperConfig(...))`` trains SIREN + SRNO end to end on one volume and returns
an :class:`~inrv.encoded.Encoded` holding the 8-bit quantised weights; ``render`` rebuilds the
network from those bytes and decodes the volume on its own grid or at any other ``shape``.
See ``docs/model-paper.md`` for the design, measurements and departures from the paper.

Training: optionally ``lr_prefit_steps`` SIREN-only steps fitting the k-space low-res volume; then per
step the SIREN is evaluated on every low-res cell centre, giving the latent low-res
volume ``z``; the SRNO encoder turns ``z`` into features; ``points_per_step`` random full-res voxels
are decoded and compared with the data. Loss = ``L1(SR, data) + lr_loss_weight * L1(z, kspace_lr)``
where ``kspace_lr`` is the k-space downsampled volume. Data are normalised to [0, 1] with the
volume's (min, max); the decoded output is clipped to that range.

Whole volumes (``PaperConfig.block``, ``max_lr_cells``, ``amp``): the low-res grid is cut into blocks of
about ``block`` full-res voxels, one SIREN per non-constant block, all evaluated at once
(:class:`~inrv.codec.paper.siren.BlockSiren`, batched matmuls) and assembled into the whole low-res grid that
the one shared SRNO reads; training and decoding stream over slabs of low-res rows so memory stays
bounded. One block in all is exactly the single-SIREN model above. See "Whole volumes" in
docs/model-paper.md.

The package, one module per job::

    downsample.py  k-space (Fourier) downsampling to the low-res grid
    siren.py       SIREN and BlockSiren (one SIREN per block, batched)
    srno.py        the 3D SRNO: conv encoder, Galerkin attention, query MLP
    partition.py   the block partition of the low-res grid (numpy; read back from a file)
    network.py     PaperNet: SIREN(s) -> SRNO, and its parameter count
    slabs.py       decoding streamed over slabs of low-res rows, queries on worker threads
    fit.py         one fit, phase by phase on a PaperFit state: prepare, prefit, train, qat, store
    config.py      PaperConfig, presets, FAMILY (torch-free)
    model.py       PaperModel: fit (checks, then fit.py) and render

Importing this package does not import torch: names load from their module on first use
(``from inrv.codec.paper import PaperModel``). ``inrv.codec.siren``, ``.srno`` and ``.downsample``
are the modules of this package under their former names.
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__ = ["PaperModel", "PaperNet", "count_params", "make_partition"]

# module of this package -> the names it defines (imported, with torch, on first use)
_EXPORTS = {
    "downsample": ("lowres_shape", "kspace_downsample"),
    "siren": ("siren_params", "grid_coords", "index_coords", "SineLayer", "Siren", "BlockSiren"),
    "srno": ("srno_params", "ResBlock", "Encoder", "GalerkinBlock", "FAST_CPU", "FAST_CHUNK", "_FastBlock",
             "_CORNERS", "neighbours", "SRNO3D"),
    "partition": ("Partition", "block_lr_size", "make_partition", "_read_partition"),
    "network": ("PaperNet", "_build", "count_params"),
    "slabs": ("RENDER_CHUNK", "halo_rows", "_slab_rows", "_window", "_query_window", "_with_axis0", "_amp",
              "_slab_cores", "_query_range", "_predict"),
    "fit": ("FLOAT_PSNR_VOXELS", "PaperFit", "fit_volume", "prepare", "prefit", "train", "qat", "store", "_psnr01"),
    "config": ("PaperConfig", "normalise_ds", "_normalise", "FAMILY"),
    "model": ("_LIMITS", "MAX_RENDER_VOXELS", "_check_config", "_as_volume", "PaperModel"),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
