"""The entropy model's inputs, defined once: coding-pass order, neighbour offsets, and for each pass
which features a latent reads, in the order of the context network's first-layer columns.

Both sides of the rate read this module: the training rate (:meth:`ContextModel.pass_bits
<inrv.codec.latent.context.ContextModel.pass_bits>`, torch) and the exact coder
(:mod:`inrv.codec.latent.coder`, numpy) walk :func:`pass_plan` and gather each pass's features in its
order, so a change to the entropy model's inputs is made here and reaches both. numpy only.

First-layer inputs of the 8-pass context model (``C`` channels per latent), in column order::

    [coarser level here (C) | its ncoarse-1 neighbours ((ncoarse-1) C)
     | 26 same-level neighbours (26 C) | pass one-hot (8)]

with ``ncoarse`` 7 (value + 6 faces) or 27 (the whole 3x3x3 neighbourhood). A pass reads only the
same-level neighbours decoded before it (:func:`avail_table`); the columns of the others and the
one-hot (folded into the bias) are dropped. The 2-pass (checkerboard) model reads
``[coarse (C) | its 6 faces (6C) | 6 same-level faces (6C) | second-half flag (1)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError


def parity(shape: tuple[int, int, int]) -> np.ndarray:
    """Checkerboard mask: True for the second ("B") half, coded after the first ("A") half."""
    i, j, k = np.indices(shape, sparse=True)
    return ((i + j + k) % 2).astype(bool)


# 8-pass order of the 2x2x2 sub-lattices (phase bits = (i%2, j%2, k%2)): a sparse lattice first,
# then its body centres, then the face-diagonal and finally the axis-offset sub-lattices, each pass
# seeing every latent of the earlier passes among its 26 neighbours.
_PASS_ORDER_8 = (0b000, 0b111, 0b011, 0b101, 0b110, 0b100, 0b010, 0b001)
# the 26 neighbour offsets of a 3x3x3 neighbourhood, in a fixed order
_OFFSETS_26 = tuple((a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0))
# the six face offsets, in the order of :func:`~inrv.codec.latent.context._neigh_torch` and of the coder
_FACES_6 = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def pass_map(shape: tuple[int, int, int], passes: int) -> np.ndarray:
    """Coding pass (0 .. passes-1) of every latent of a level: 2 = checkerboard, 8 = 2x2x2 sub-lattices."""
    i, j, k = np.indices(shape, sparse=True)
    if passes == 2:
        return ((i + j + k) % 2).astype(np.int64)
    if passes == 8:
        rank = np.empty(8, np.int64)
        rank[list(_PASS_ORDER_8)] = np.arange(8)
        return rank[4 * (i % 2) + 2 * (j % 2) + (k % 2)]
    raise InputError(f"unsupported number of context passes {passes} (2 or 8)")


def avail_table() -> np.ndarray:
    """(8, 26) bool: for a latent of pass p, whether its neighbour at ``_OFFSETS_26[o]`` is decoded
    before it (its pass is earlier). Translation invariant: the neighbour's phase is the latent's
    phase XOR the offset's parity bits."""
    rank = np.empty(8, np.int64)
    rank[list(_PASS_ORDER_8)] = np.arange(8)
    out = np.zeros((8, 26), bool)
    for p, ph in enumerate(_PASS_ORDER_8):
        for o, (a, b, c) in enumerate(_OFFSETS_26):
            out[p, o] = rank[ph ^ (4 * (a & 1) + 2 * (b & 1) + (c & 1))] < p
    return out


def n_features(passes: int, channels: int, coarse: int = 7) -> int:
    """Inputs of the context network's first layer (see the module docstring)."""
    return 13 * channels + 1 if passes == 2 else (coarse + 26) * channels + 8


def coarse_context(first_layer_inputs: int, channels: int) -> int:
    """``ncoarse`` (7 or 27) of an 8-pass context network from its first layer's input count."""
    return (first_layer_inputs - 8) // channels - 26


@dataclass(frozen=True)
class Pass:
    """What the latents of one pass of the 8-pass context read, in first-layer column order.

    ``index``: the pass (0..7); ``phase``: index parities (i%2, j%2, k%2) of its sub-lattice;
    ``coarse``: offsets read on the coarser level upsampled here (the latent's own cell first);
    ``same``: offsets of the same-level neighbours decoded before it; ``cols``: first-layer columns of
    those features in that order; ``flag``: the column of the pass one-hot (a constant 1: a bias)."""

    index: int
    phase: tuple[int, int, int]
    coarse: tuple[tuple[int, int, int], ...]
    same: tuple[tuple[int, int, int], ...]
    cols: tuple[int, ...]
    flag: int


def pass_plan(coarse: int, channels: int) -> list[Pass]:
    """The eight passes of the 8-pass context, in coding order (``coarse``: 7 or 27)."""
    C = channels
    avail = avail_table()
    c_offs = ((0, 0, 0),) + (_OFFSETS_26 if coarse == 27 else _FACES_6)
    out = []
    for p, ph in enumerate(_PASS_ORDER_8):
        used = [o for o in range(26) if avail[p, o]]
        cols = list(range(coarse * C)) + [coarse * C + o * C + c for o in used for c in range(C)]
        out.append(Pass(index=p, phase=((ph >> 2) & 1, (ph >> 1) & 1, ph & 1), coarse=c_offs,
                        same=tuple(_OFFSETS_26[o] for o in used), cols=tuple(cols), flag=(coarse + 26) * C + p))
    return out
