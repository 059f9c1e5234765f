"""The background mask: blocks whose voxels all equal the volume minimum, stored as a bit grid and
restored exactly."""

from __future__ import annotations

import numpy as np

from ...errors import InputError


def background_blocks(vol: np.ndarray, block: int) -> np.ndarray:
    """(nb0, nb1, nb2) bool: the ``block``^3 blocks (the last ones partial) whose voxels all equal the
    volume's minimum: the air around a head, the zero padding of a template."""
    eq = vol == vol.min()
    pads = [(0, (-n) % block) for n in vol.shape]
    eq = np.pad(eq, pads, constant_values=True)
    nb = [n // block for n in eq.shape]
    return eq.reshape(nb[0], block, nb[1], block, nb[2], block).all(axis=(1, 3, 5))


def expand_blocks(blocks: np.ndarray, block: int, shape, r0: int = 0, r1: int | None = None) -> np.ndarray:
    """Voxel mask of rows ``[r0, r1)`` (first axis) of a volume of ``shape`` from its block mask."""
    r1 = shape[0] if r1 is None else r1
    # index by block number: memory is that of the output, whatever the block edge a file declares
    return blocks[np.ix_(np.arange(r0, r1) // block, np.arange(shape[1]) // block, np.arange(shape[2]) // block)]


def pack_blocks(blocks: np.ndarray) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=19).compress(np.packbits(blocks.ravel()).tobytes())


def unpack_blocks(data: bytes, nb) -> np.ndarray:
    """Inverse of :func:`pack_blocks` for a block grid of shape ``nb``; reads at most the bytes that grid
    needs (a frame that declares more is not trusted), and a short or long payload is an error."""
    import io

    import zstandard

    n = (int(np.prod(nb)) + 7) // 8
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(n + 1)
    if len(raw) != n:
        raise InputError("corrupt background mask")
    return np.unpackbits(np.frombuffer(raw, np.uint8), count=int(np.prod(nb))).astype(bool).reshape(nb)
