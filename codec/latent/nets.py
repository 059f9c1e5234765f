"""Storage of the synthesis and context networks: names and shapes from the architecture,
entropy-coded weights (per-tensor steps chosen by rate-distortion cost) and the older
fixed-precision affine packing."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import InputError
from .. import netcode
from .config import LatentConfig
from ..quant import dequantize_state, quantize_state
from .context import ContextModel, _make_ctx
from .grids import up_torch
from .synthesis import _make_synth, rate_rows


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


def _rate_inputs(ctx: ContextModel, qs, shapes, shape, rows, max_vox: int) -> list:
    """The gathered context inputs of every level (8-pass model), the way ``rate_bits`` (``rows``: a
    slab of output rows, each level's matching rows scaled up) or ``total_bits`` (whole levels in row
    chunks) reads them: per level, ``(k, scale, [chunk inputs])``."""
    out = []
    with torch.no_grad():
        for k in range(len(shapes)):
            n0 = shapes[k][0]
            if rows is None:
                step_r = max(1, max_vox // max(1, shapes[k][1] * shapes[k][2]))
                spans, scale = [(a, min(n0, a + step_r)) for a in range(0, n0, step_r)], 1.0
            else:
                a, b = rate_rows(shape[0], n0, int(rows[0]), int(rows[-1]) + 1)
                spans, scale = [(a, b)], n0 / (b - a)
            chunks = []
            for a, b in spans:
                lo_, hi_ = max(0, a - 1), min(n0, b + 1)
                coarse = up_torch(qs[k + 1], shapes[k], np.arange(lo_, hi_)) if k + 1 < len(shapes) else None
                chunks.append(ctx.pass_inputs(qs[k][:, lo_:hi_], coarse, lo_, a, b))
            out.append((k, scale, chunks))
    return out


def _cached_bits(ctx: ContextModel, inputs, scaled: bool) -> float:
    """Bits of the latents behind ``inputs`` (:func:`_rate_inputs`) under the context model's current
    weights; sums in the order ``rate_bits`` (``scaled``) or ``total_bits`` does."""
    with torch.no_grad():
        tot = 0.0
        for k, scale, chunks in inputs:
            for ins in chunks:
                lv = 0.0
                for ps, qg, cg in ins:
                    lv = lv + ctx._pass_net(qg, cg, k, ps)
                tot = tot + lv * scale if scaled else tot + float(lv)
        return float(tot)


def _choose_weight_steps(state: dict[str, np.ndarray], names: list[str], dist_of, lat_bits_of,
                         lam_per_bit: float, span: int = 12, stride: int = 1,
                         small: int = 0) -> dict[str, int]:
    """Per-tensor quantisation step ``2**-e`` by measured rate-distortion cost (Cool-chic's recipe).

    Coordinate-wise, in storage order: every tensor starts at its finest step; then each one in
    turn is measured at every step from the finest to ``2**span`` times coarser (about 4 bits over
    its range) and keeps the one with the lowest ``distortion + lam_per_bit * (latent bits + weight
    bits)``. The whole range is measured because the error of a rounded tensor is not monotone in
    the step (a bias can land closer at a coarse step than at a finer one), so a search that stops
    at the first rise can stop far from the best step. Synthesis tensors change only the
    distortion (``dist_of``), context tensors only the latent bits (``lat_bits_of``).

    ``stride`` > 1 (time-budgeted encodes): every ``stride``-th step first, then the steps within
    ``stride - 1`` of the cheapest of those (9 of 13 measures with the default span and stride 3).
    ``small`` > 0 (same): tensors of at most ``small`` numbers (biases) are not measured but take a
    step 8 times coarser than their finest (an error below 2^-12 of their largest value), where
    they cost at most a few bytes more than their best step.
    """
    exps = {n: netcode.finest_exp(state[n]) for n in names}

    def deq():
        return {n: netcode.dequantize(netcode.quantize(state[n], exps[n]), exps[n]).reshape(state[n].shape)
                for n in names}

    for n in names:
        f = exps[n]
        if state[n].size <= small:
            exps[n] = f - 3
            continue
        best_e, best_c = f, math.inf
        cost: dict[int, float] = {}

        def measure(e: int) -> float:
            exps[n] = e
            term = dist_of(deq()) if n.startswith("syn.") else lam_per_bit * lat_bits_of(deq())
            cost[e] = term + lam_per_bit * netcode.tensor_bits(state[n], e)
            return cost[e]
        for e in range(f, f - span - 1, -max(1, stride)):
            if measure(e) < best_c:
                best_e, best_c = e, cost[e]
        if stride > 1:
            centre = best_e
            for e in range(centre + stride - 1, centre - stride, -1):
                if f - span <= e <= f and e not in cost and measure(e) < best_c:
                    best_e, best_c = e, cost[e]
        exps[n] = best_e
    return exps
