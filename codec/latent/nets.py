"""Storage of the synthesis and context networks: names and shapes from the architecture,
entropy-coded weights (per-tensor steps chosen by rate-distortion cost) and the older
fixed-precision affine packing."""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError
from .. import netcode
from .config import LatentConfig
from ..quant import dequantize_state, quantize_state
from .context import _make_ctx
from .synthesis import _make_synth


_GROUPS = ("syn.w", "syn.c", "syn.b", "ctx.w", "ctx.b")


def _group_of(name: str) -> str:
    """Quantisation group of a tensor: tensors of similar magnitude share one (scale, offset)."""
    net = name.split(".", 1)[0]
    if name.endswith("bias") or name.endswith("level_bias"):
        return f"{net}.b"
    if name == "syn.skip.weight":
        return "syn.c"
    return f"{net}.w"


def _arch_shapes(n_levels: int, cfg: LatentConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every stored network tensor, in storage order (from the architecture)."""
    syn = _make_synth(n_levels, cfg)
    ctx = _make_ctx(n_levels, cfg)
    out = {f"syn.{k}": tuple(v.shape) for k, v in syn.state_dict().items()}
    out.update({f"ctx.{k}": tuple(v.shape) for k, v in ctx.state_dict().items()})
    return out


def pack_nets(state: dict[str, np.ndarray], bits: int) -> tuple[bytes, list[list[float]]]:
    """Quantise the networks as five flat groups (see :func:`_group_of`) with
    ``quantize_state``; return the payload and only the per-group (scale, offset) pairs: the rest
    of the quantisation meta follows from the architecture (see :func:`unpack_nets`)."""
    flat = {g: np.concatenate([np.ravel(v) for k, v in state.items() if _group_of(k) == g]) for g in _GROUPS}
    payload, meta = quantize_state(flat, bits=bits)
    compact = [[meta["tensors"][g]["scale"][0], meta["tensors"][g]["offset"][0]] for g in _GROUPS]
    return payload, compact


def unpack_nets(payload: bytes, compact, bits: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_nets`: rebuild the full quantisation meta, dequantise, split by name."""
    if not isinstance(compact, list) or len(compact) != len(_GROUPS):
        raise InputError("bad weight-quantisation parameters")
    tensors, off = {}, 0
    sizes = {g: sum(int(np.prod(s)) for k, s in shapes.items() if _group_of(k) == g) for g in _GROUPS}
    for g, sc in zip(_GROUPS, compact):
        nb = (sizes[g] * bits + 7) // 8
        tensors[g] = {"shape": [sizes[g]], "bits": bits, "axis": None, "scale": [sc[0]], "offset": [sc[1]],
                      "byte_offset": off, "nbytes": nb}
        off += nb
    flat = dequantize_state(payload, {"scheme": "affine-v1", "tensors": tensors})
    out, pos = {}, {g: 0 for g in _GROUPS}
    for k, s in shapes.items():
        g, n = _group_of(k), int(np.prod(s))
        out[k] = flat[g][pos[g]:pos[g] + n].reshape(s)
        pos[g] += n
    return out


def _decode_nets(payload: bytes, conf: dict, cfg: LatentConfig, n_levels: int) -> dict[str, np.ndarray]:
    """The dequantised network tensors of a file: entropy-coded (``wq``) or, in files written
    before that, affine-packed at ``weight_bits`` (``quant``)."""
    shapes = _arch_shapes(n_levels, cfg)
    if "wq" in conf:
        flat = netcode.decode(payload, conf["wq"], conf.get("wmax"), [int(np.prod(s)) for s in shapes.values()])
        return {k: f.reshape(s) for (k, s), f in zip(shapes.items(), flat)}
    if not cfg.weight_bits:
        raise InputError("no network-weight quantisation in the file")
    return unpack_nets(payload, conf["quant"], int(cfg.weight_bits), shapes)


def _choose_weight_steps(state: dict[str, np.ndarray], names: list[str], dist_of, lat_bits_of,
                         lam_per_bit: float, span: int = 12) -> dict[str, int]:
    """Per-tensor quantisation step ``2**-e`` by measured rate-distortion cost (Cool-chic's recipe).

    Coordinate-wise, in storage order: every tensor starts at its finest step; then each one in
    turn is measured at every step from the finest to ``2**span`` times coarser (about 4 bits over
    its range) and keeps the one with the lowest ``distortion + lam_per_bit * (latent bits + weight
    bits)``. The whole range is measured because the error of a rounded tensor is not monotone in
    the step (a bias can land closer at a coarse step than at a finer one), so a search that stops
    at the first rise can stop far from the best step. Synthesis tensors change only the
    distortion (``dist_of``), context tensors only the latent bits (``lat_bits_of``).
    """
    exps = {n: netcode.finest_exp(state[n]) for n in names}

    def deq():
        return {n: netcode.dequantize(netcode.quantize(state[n], exps[n]), exps[n]).reshape(state[n].shape)
                for n in names}

    for n in names:
        f = exps[n]
        best_e, best_c = f, math.inf
        for e in range(f, f - span - 1, -1):
            exps[n] = e
            term = dist_of(deq()) if n.startswith("syn.") else lam_per_bit * lat_bits_of(deq())
            c = term + lam_per_bit * netcode.tensor_bits(state[n], e)
            if c < best_c:
                best_e, best_c = e, c
        exps[n] = best_e
    return exps
