"""The ``nearlossless`` model family: a guaranteed maximum error ``E`` per voxel (``E = 0``: lossless).

No network: a hierarchical integer interpolation predictor (:mod:`.predict`) with the residual quantised
in the loop in bins of width ``2E + 1``, and context-modelled range coding of the quantised residuals
(:mod:`.coder`, :mod:`.tokens`). Payload version 2 refines the interpolation with an edge-preserving mean
over 18 decoded neighbours of a denoised copy (the median at edges): it pays on noisy flat levels (CT);
the encoder keeps the smaller of versions 1 and 2 (config ``predictor``: ``auto``, ``interp`` = v1,
``smooth`` = v2). Every step the decoder repeats is integer arithmetic, so a file decodes to
the same voxels on every machine, thread count and BLAS. The encoder decodes its own bytes and checks the
bound before it returns.

Integer voxels: ``E`` is in stored units (floored to an integer bound). Float voxels: near-lossless only
(``E > 0``): the values are snapped to a grid of step just under ``2E`` and the grid indices coded
losslessly; lossless float coding raises :class:`~inrv.errors.InputError`.

Config keys written to the file (``c``): ``max_error`` (the bound asked for, stored units), ``v`` (payload
version, 1 or 2), ``th``/``kd`` (version 2: smoothing threshold and denoising weight), ``E`` (the integer bound on the coded integers), ``lo``/``hi``/``root`` (range and first
voxel of the coded integers), ``mirror`` (axis of exact mirror symmetry, when used), ``step`` (float data:
voxel = index * step), ``fallback`` (when :func:`inrv.compress` stored this lossless file instead of a
larger one of another family: that family's id). See docs/format.md.
"""

from .config import NearLosslessConfig
from .model import NearLosslessModel

__all__ = ["NearLosslessConfig", "NearLosslessModel"]
