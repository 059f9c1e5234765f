"""The block partition of the paper model's low-res grid: one SIREN per non-constant block
(see "Whole volumes" in docs/model-paper.md). numpy only."""

from __future__ import annotations

import math

import numpy as np

from ...errors import FormatError
from ..base import Encoded
from .config import PaperConfig
from .config import block_lr_size  # noqa: F401  (torch-free, shared with the configuration check)


class Partition:
    """How the low-res grid is cut into blocks, one SIREN each (see "Whole volumes" in docs/model-paper.md).

    ``bl``: block size in low-res cells per axis (about ``block // ds``, see :func:`block_lr_size`);
    ``grid``: blocks per axis (``ceil(m / bl)``; the last block of an axis may stick out of the volume,
    its extra cells are evaluated and dropped); ``active``: bool per block (C order), False for blocks
    whose full-res content is constant; ``const``: the normalised value of those blocks.
    ``legacy`` (one block in all): the original single-SIREN network, stored exactly as before.
    """

    def __init__(self, lr_shape, bl, active: np.ndarray, const: np.ndarray, legacy: bool):
        self.lr_shape = tuple(int(v) for v in lr_shape)
        self.bl = tuple(int(v) for v in bl)
        self.grid = tuple(-(-m // b) for m, b in zip(self.lr_shape, self.bl))
        self.active = np.asarray(active, bool).reshape(-1)
        self.const = np.asarray(const, np.float32).reshape(-1)
        self.legacy = bool(legacy)

    @property
    def nblocks(self) -> int:
        return math.prod(self.grid)

    def to_config(self) -> dict:
        return {"bl": list(self.bl), "grid": list(self.grid), "active": int(self.active.sum())}

    def section(self) -> bytes:
        """Block map: one uint8 per block (1 = has a SIREN), then float32 LE constants of all blocks."""
        return self.active.astype(np.uint8).tobytes() + self.const.astype("<f4").tobytes()


def make_partition(norm: np.ndarray, lr_shape, ds, block: int) -> Partition:
    """Partition for a normalised volume: blocks whose full-res voxels are all equal get no SIREN."""
    bl = block_lr_size(lr_shape, ds, block)
    grid = tuple(-(-m // b) for m, b in zip(lr_shape, bl))
    if math.prod(grid) == 1:
        return Partition(lr_shape, bl, np.ones(1, bool), np.zeros(1, np.float32), legacy=True)
    hb = [b * int(f) for b, f in zip(bl, ds)]                 # block edge in full-res voxels
    pad = [(0, g * h - n) if g * h >= n else (0, 0) for g, h, n in zip(grid, hb, norm.shape)]
    x = np.pad(norm, pad, mode="edge")[:grid[0] * hb[0], :grid[1] * hb[1], :grid[2] * hb[2]]
    x = x.reshape(grid[0], hb[0], grid[1], hb[1], grid[2], hb[2])
    lo = x.min(axis=(1, 3, 5)).reshape(-1)
    hi = x.max(axis=(1, 3, 5)).reshape(-1)
    active = hi > lo
    const = np.where(active, 0.0, lo).astype(np.float32)
    return Partition(lr_shape, bl, active, const, legacy=False)


def _read_partition(encoded: Encoded, cfg: PaperConfig, lr_shape) -> Partition | None:
    """The block partition recorded in a stream (None: a single-SIREN stream, as before blocks)."""
    pc = encoded.config.get("partition")
    if pc is None:
        return None
    try:
        bl = tuple(int(v) for v in pc["bl"])
        grid = tuple(int(v) for v in pc["grid"])
    except (TypeError, ValueError, KeyError):
        raise FormatError("paper stream: bad partition record") from None
    if len(bl) != 3 or bl != block_lr_size(lr_shape, cfg.ds, int(cfg.block)) \
            or grid != tuple(-(-m // b) for m, b in zip(lr_shape, bl)):
        raise FormatError(f"paper stream: partition {pc!r} does not match the volume's low-res grid {lr_shape}")
    nb = math.prod(grid)
    raw = encoded.sections.get("blockmap")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != 5 * nb:
        raise FormatError(f"paper stream: block map must hold {5 * nb} bytes")
    mask = np.frombuffer(bytes(raw[:nb]), np.uint8)
    const = np.frombuffer(bytes(raw[nb:]), "<f4").astype(np.float32)
    if mask.max(initial=0) > 1 or not np.all(np.isfinite(const)) or int(mask.sum()) != pc.get("active"):
        raise FormatError("paper stream: corrupt block map")
    return Partition(lr_shape, bl, mask.astype(bool), const, legacy=False)
