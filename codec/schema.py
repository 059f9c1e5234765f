"""The model configuration a file carries (``c``), validated before anything is built (no torch).

A ``.inrv`` file comes from anywhere. Its model configuration decides how many layers, channels and
latents the decoder builds and decodes, so it is checked here as a whole, *before* any allocation,
against documented limits (``docs/format.md``, "Model configuration limits"):

* every known field: its type (an int is an int, not a bool, a float or a map), a finite number,
  its documented range or one of its allowed values;
* consistency: fields that must agree (``attn_width`` divisible by ``attn_heads``, ``ctx_coarse`` 27
  only with the 8-pass context, the stored low-res grid and block partition derived from the shape,
  one weight code per network tensor, ...);
* the sizes they imply: network parameters, per-voxel working features and latents, bounded;
* by version: a payload version newer than this reader is ``UnsupportedVersionError``; fields a
  version did not have get that version's meaning (e.g. latent files before ``ctx_passes`` used the
  checkerboard context); unknown fields are ignored (additive changes), missing required ones are
  an error.

``validate_config(model, config, shape)`` raises :class:`~inrv.errors.FormatError` (or its subclasses
``LimitError`` / ``UnsupportedVersionError``) and returns nothing. ``inrv info`` calls it, torch-free,
so a file whose configuration no decoder would accept is never called intact; each family's
``render`` calls it again first (an ``Encoded`` may come from elsewhere than a file).

Only the standard library here: hand checks over small tables, measured against a typed schema
library in docs/format.md (the tables are the schema; a decoded header is a few hundred values).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from ..errors import FormatError, LimitError, UnsupportedVersionError
from .latent.config import level_shapes as latent_level_shapes
from .paper.config import block_lr_size as paper_block_lr_size

# --------------------------------------------------------------------------- field checks

_Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:       # an int beyond float range
        return False


def Int(lo: int, hi: int) -> _Check:
    return lambda v: _is_int(v) and lo <= v <= hi


def Num(lo: float = -math.inf, hi: float = math.inf) -> _Check:
    return lambda v: _is_num(v) and lo <= v <= hi


def OneOf(*values: Any) -> _Check:
    return lambda v: not isinstance(v, bool) and type(v) in (int, str, float) and v in values


def Bool() -> _Check:
    return lambda v: isinstance(v, bool)


def Opt(check: _Check) -> _Check:
    return lambda v: v is None or check(v)


def IntList(n: int, lo: int, hi: int) -> _Check:
    return lambda v: isinstance(v, list) and len(v) == n and all(_is_int(x) and lo <= x <= hi for x in v)


def _fail(model: str, key: str, value: Any, rule: str) -> FormatError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return FormatError(f"invalid .inrv model configuration: {model} {key}={shown} ({rule})")


def _check_fields(model: str, conf: Mapping[str, Any], spec: Mapping[str, tuple[_Check, str]]) -> None:
    for key, (check, rule) in spec.items():
        if key in conf and not check(conf[key]):
            raise _fail(model, key, conf[key], rule)


def _require(model: str, conf: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for k in keys:
        if k not in conf:
            raise FormatError(f"invalid .inrv model configuration: {model} needs {k!r}, which is missing")


# --------------------------------------------------------------------------- latent family

#: payload version of the latent family this reader decodes (``codec/latent.py`` FORMAT_VERSION)
LATENT_VERSION = 3

#: documented limits of the latent family (docs/format.md); presets use a fraction of each
LATENT_LIMITS = {
    "levels": 16, "channels": 16, "synth_width": 256, "synth_layers": 8, "conv_channels": 64,
    "ctx_width": 256, "ctx_layers": 4,
    "params": 1 << 21,          # network parameters in all
    "features": 512,            # per-voxel working features of the synthesis (latents + width + conv)
    "sym": 1 << 15,             # |latent symbol| bound of sym_range
}
_L = LATENT_LIMITS

#: every LatentConfig field a file may carry, with its rule (fields outside this table are ignored)
LATENT_FIELDS: dict[str, tuple[_Check, str]] = {
    "v": (Int(1, 1 << 30), "a payload version >= 1"),
    "levels": (Int(1, _L["levels"]), f"1..{_L['levels']}"),
    "channels": (Int(1, _L["channels"]), f"1..{_L['channels']}"),
    "synth_width": (Int(1, _L["synth_width"]), f"1..{_L['synth_width']}"),
    "synth_layers": (Int(0, _L["synth_layers"]), f"0..{_L['synth_layers']}"),
    "conv_channels": (Int(1, _L["conv_channels"]), f"1..{_L['conv_channels']}"),
    "synth_kernel": (OneOf(3, 5), "3 or 5"),
    "synth_convs": (OneOf(1, 2), "1 or 2"),
    "upsample": (OneOf("linear", "cubic"), "'linear' or 'cubic'"),
    "ctx_passes": (OneOf(2, 8), "2 or 8"),
    "ctx_width": (Int(1, _L["ctx_width"]), f"1..{_L['ctx_width']}"),
    "ctx_layers": (Int(1, _L["ctx_layers"]), f"1..{_L['ctx_layers']}"),
    "ctx_coarse": (OneOf(7, 27), "7 or 27"),
    "weight_bits": (Opt(Int(2, 16)), "2..16 or nil"),
    "bg_block": (Int(0, 1 << 31), "a block edge >= 0"),
    "wmax": (Int(1, (1 << 15) - 1), "1..32767"),
    # training-only fields: not used to decode, but shown by `inrv info`: type and finiteness only
    "lmbda": (Num(0.0), "a finite number >= 0"),
    "steps": (Int(0, 1 << 40), "an int >= 0"),
    "lr": (Num(0.0), "a finite number >= 0"),
    "target_bpv": (Opt(Num(0.0)), "a finite number >= 0 or nil"),
    "target_psnr": (Opt(Num()), "a finite number or nil"),
    "seed": (Int(-(1 << 63), (1 << 64) - 1), "an int"),
    "net_lr": (Num(0.0), "a finite number >= 0"),
    "hard_frac": (Num(0.0, 1.0), "0..1"),
    "polish_steps": (Int(0, 1 << 40), "an int >= 0"),
    "search_steps": (Opt(Int(0, 1 << 40)), "an int >= 0 or nil"),
    "search_iters": (Int(0, 1 << 40), "an int >= 0"),
    "max_voxels_per_step": (Int(1, 1 << 62), "an int >= 1"),
    "soft_round": (Bool(), "true or false"),
    "soft_t0": (Num(), "a finite number"),
    "noise_a0": (Num(), "a finite number"),
    "soft_t1": (Num(), "a finite number"),
    "init_scale": (Num(), "a finite number"),
    "rate_checkpoint": (Opt(Bool()), "true, false or nil"),
    "rate_passes": (Int(1, 8), "1..8"),
}

_LATENT_REQUIRED = ("levels", "channels", "synth_width", "synth_layers", "conv_channels", "ctx_width", "sym_range")


def latent_tensor_shapes(conf: Mapping[str, Any], n_levels: int) -> list[tuple[str, tuple[int, ...]]]:
    """Name and shape of every stored network tensor of a (validated) latent config, in storage
    order, computed without torch (the same architecture as ``Synthesis`` and ``ContextModel``)."""
    C, L = conf["channels"], n_levels
    n_in, w, layers = L * C, conf["synth_width"], conf["synth_layers"]
    conv, k = conf["conv_channels"], conf.get("synth_kernel", 3)
    out: list[tuple[str, tuple[int, ...]]] = []
    d, i = n_in, 0
    for _ in range(layers):
        out += [(f"syn.net.{i}.weight", (w, d)), (f"syn.net.{i}.bias", (w,))]
        d, i = w, i + 2
    out += [(f"syn.net.{i}.weight", (conv, d)), (f"syn.net.{i}.bias", (conv,))]
    if conf.get("synth_convs", 1) == 2:
        out += [("syn.mid.weight", (conv, conv, 3, 3, 3)), ("syn.mid.bias", (conv,))]
    out += [("syn.skip.weight", (1, n_in + conv, k, k, k)), ("syn.skip.bias", (1,))]
    cw, passes, coarse = conf["ctx_width"], conf.get("ctx_passes", 2), conf.get("ctx_coarse", 7)
    nf = 13 * C + 1 if passes == 2 else (coarse + 26) * C + 8
    # a module's own parameters come first in torch's state_dict order, then its submodules'
    out += [("ctx.level_bias", (L, 2 * C)), ("ctx.l1.weight", (cw, nf)), ("ctx.l1.bias", (cw,))]
    for j in range(conf.get("ctx_layers", 1) - 1):
        out += [(f"ctx.mids.{j}.weight", (cw, cw)), (f"ctx.mids.{j}.bias", (cw,))]
    out += [("ctx.l2.weight", (2 * C, cw)), ("ctx.l2.bias", (2 * C,))]
    return out


def latent_defaults(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` with the decode fields a file's version did not have set to that version's meaning."""
    d = dict(conf)
    d.setdefault("ctx_passes", 2)       # files written before the 8-pass context: checkerboard
    d.setdefault("upsample", "linear")  # ... and before cubic synthesis upsampling
    d.setdefault("ctx_layers", 1)       # ... and before deeper context models
    d.setdefault("synth_kernel", 3)
    d.setdefault("synth_convs", 1)
    d.setdefault("ctx_coarse", 7)
    return d


def validate_latent(conf: Mapping[str, Any], shape: tuple[int, ...]) -> None:
    m = "latent"
    v = conf.get("v", 1)
    if not _is_int(v) or v < 1:
        raise _fail(m, "v", v, "a payload version >= 1")
    if v > LATENT_VERSION:
        raise UnsupportedVersionError(f"latent-model payload version {v} is newer than this reader "
                                      f"({LATENT_VERSION}): upgrade inrv")
    _require(m, conf, _LATENT_REQUIRED)
    _check_fields(m, conf, LATENT_FIELDS)
    c = latent_defaults(conf)
    if c["ctx_coarse"] == 27 and c["ctx_passes"] != 8:
        raise _fail(m, "ctx_coarse", 27, "27 needs ctx_passes 8")
    sr = conf["sym_range"]
    S = _L["sym"]
    if not (isinstance(sr, list) and len(sr) == 2 and all(_is_int(x) and -S <= x <= S for x in sr)
            and sr[0] < sr[1]):
        raise _fail(m, "sym_range", sr, f"[lo, hi], ints with -{S} <= lo < hi <= {S}")
    if "wq" in conf:
        _require(m, conf, ("wmax",))
    elif "quant" in conf:
        if not _is_int(conf.get("weight_bits")):
            raise _fail(m, "weight_bits", conf.get("weight_bits"), "2..16 for a file with 'quant'")
        q = conf["quant"]
        if not (isinstance(q, list) and len(q) == 5 and all(
                isinstance(r, list) and len(r) == 2 and all(_is_num(x) for x in r) and r[0] >= 0 for r in q)):
            raise _fail(m, "quant", q, "5 pairs [scale >= 0, offset] of finite numbers")
    else:
        raise FormatError("invalid .inrv model configuration: latent has no network-weight coding ('wq' or 'quant')")
    bb = conf.get("bg_block", 0)
    if bb:
        if v < 3:
            raise _fail(m, "bg_block", bb, "a background mask needs payload version 3")
        if bb > max(shape):
            raise _fail(m, "bg_block", bb, f"1..{max(shape)}, the largest axis")
    shapes = latent_level_shapes(tuple(shape), c["levels"])
    tensors = latent_tensor_shapes(c, len(shapes))
    params = sum(math.prod(s) for _, s in tensors)
    if params > _L["params"]:
        raise LimitError(f"latent model configuration implies {params} network parameters, over the limit of "
                         f"{_L['params']}: a corrupt or unsupported file")
    feats = len(shapes) * c["channels"] + c["synth_width"] + 2 * c["conv_channels"]
    if feats > _L["features"]:
        raise LimitError(f"latent model configuration implies {feats} working features per voxel, over the "
                         f"limit of {_L['features']}: a corrupt or unsupported file")
    if "wq" in conf:
        wq = conf["wq"]
        if not (isinstance(wq, list) and len(wq) == len(tensors) and all(
                isinstance(r, list) and len(r) == 2 and _is_int(r[0]) and -30 <= r[0] <= 30
                and _is_int(r[1]) and 0 <= r[1] < 1024 for r in wq)):
            raise _fail(m, "wq", wq, f"{len(tensors)} pairs [step exponent -30..30, scale code 0..1023], "
                                     "one per network tensor")


# --------------------------------------------------------------------------- paper family

PAPER_LIMITS = {"sn": 512, "siren_layers": 16, "nc": 64, "res_blocks": 16, "attn_width": 256, "attn_heads": 16,
                "attn_blocks": 8, "mlp_width": 512, "block": 1 << 16, "max_lr_cells": 1 << 24,
                "blocks": 1 << 20}
_P = PAPER_LIMITS

PAPER_FIELDS: dict[str, tuple[_Check, str]] = {
    **{k: (Int(1, _P[k]), f"1..{_P[k]}") for k in ("sn", "siren_layers", "nc", "res_blocks", "attn_width",
                                                      "attn_heads", "attn_blocks", "mlp_width")},
    "ds": (IntList(3, 1, 64), "3 factors 1..64"),
    "omega0": (Num(1e-6, 1e6), "a finite number > 0"),
    "weight_bits": (Int(2, 16), "2..16"),
    "block": (Int(0, _P["block"]), f"0..{_P['block']}"),
    "max_lr_cells": (Int(1, _P["max_lr_cells"]), f"1..{_P['max_lr_cells']}"),
    "amp": (Bool(), "true or false"),
    "lr_shape": (IntList(3, 1, 1 << 31), "3 ints >= 1"),
    "steps": (Int(0, 1 << 40), "an int >= 0"),
    "lr": (Num(0.0), "a finite number >= 0"),
    "points_per_step": (Opt(Int(0, 1 << 40)), "an int >= 0 or nil"),
    "lr_loss_weight": (Num(0.0), "a finite number >= 0"),
    "lr_prefit_steps": (Int(0, 1 << 40), "an int >= 0"),
    "qat_steps": (Int(0, 1 << 40), "an int >= 0"),
    "seed": (Int(-(1 << 63), (1 << 64) - 1), "an int"),
}
_PAPER_REQUIRED = ("ds", "nc", "sn", "siren_layers", "omega0", "res_blocks", "attn_width", "attn_heads",
                   "attn_blocks", "mlp_width", "lr_shape", "quant")


def validate_paper(conf: Mapping[str, Any], shape: tuple[int, ...]) -> None:
    m = "paper"
    _require(m, conf, _PAPER_REQUIRED)
    _check_fields(m, conf, PAPER_FIELDS)
    if conf["attn_width"] % conf["attn_heads"]:
        raise _fail(m, "attn_width", conf["attn_width"], f"divisible by attn_heads={conf['attn_heads']}")
    lr_shape = tuple(max(1, -(-int(n) // int(f))) for n, f in zip(shape, conf["ds"]))
    if list(lr_shape) != conf["lr_shape"]:
        raise _fail(m, "lr_shape", conf["lr_shape"], f"{list(lr_shape)}, the shape divided by ds")
    q = conf["quant"]
    if not (isinstance(q, dict) and isinstance(q.get("tensors"), dict)):
        raise _fail(m, "quant", q, "a map with 'scheme' and 'tensors'")
    pc = conf.get("partition")
    if pc is not None:
        if not (isinstance(pc, dict) and IntList(3, 1, 1 << 31)(pc.get("bl")) and IntList(3, 1, 1 << 31)(pc.get("grid"))
                and _is_int(pc.get("active"))):
            raise _fail(m, "partition", pc, "a map {bl: 3 ints, grid: 3 ints, active: int}")
        bl = paper_block_lr_size(lr_shape, conf["ds"], conf.get("block", 64))
        grid = tuple(-(-a // b) for a, b in zip(lr_shape, bl))
        if tuple(pc["bl"]) != bl or tuple(pc["grid"]) != grid:
            raise _fail(m, "partition", pc, f"bl {list(bl)} and grid {list(grid)} derived from the shape")
        nb = math.prod(grid)
        if nb > _P["blocks"] or not 0 <= pc["active"] <= nb:
            raise LimitError(f"paper model partition of {nb} blocks ({pc['active']} active) is beyond the limit of "
                             f"{_P['blocks']}: a corrupt or unsupported file")


# --------------------------------------------------------------------------- nearlossless family

NEARLOSSLESS_VERSION = 2
_BIG = 1 << 62
NEARLOSSLESS_FIELDS: dict[str, tuple[_Check, str]] = {
    "max_error": (Num(0.0), "a finite number >= 0"),
    "E": (Int(0, 1 << 40), "an int 0..2**40"),
    "lo": (Int(-_BIG, _BIG), "an int"), "hi": (Int(-_BIG, _BIG), "an int"),
    "root": (Int(-_BIG, _BIG), "an int"), "mode": (Int(-_BIG, _BIG), "an int"),
    "mirror": (Int(0, 2), "an axis 0..2"),
    "order": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v) and sorted(v) == [0, 1, 2],
              "a permutation of 0, 1, 2"),
    "step": (Num(1e-300), "a finite number > 0"),
    "grid": (lambda v: IntList(3, -_BIG, _BIG)(v) and v[1] >= 1 and v[0] <= v[2], "[g0, q >= 1, g1 >= g0]"),
    "fallback": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a family id"),
    "th": (Int(1, 1 << 40), "an int 1..2**40"),          # version 2: smoothing threshold
    "kd": (Int(0, 64), "an int 0..64"),                  # version 2: weight of the prediction when denoising
}


def validate_nearlossless(conf: Mapping[str, Any], shape: tuple[int, ...]) -> None:
    """docs/format.md section 13."""
    m = "nearlossless"
    v = conf.get("v")
    if not _is_int(v) or v < 1:
        raise _fail(m, "v", v, "a payload version >= 1")
    if v > NEARLOSSLESS_VERSION:
        raise UnsupportedVersionError(f"nearlossless payload version {v} is newer than this reader "
                                      f"({NEARLOSSLESS_VERSION}): upgrade inrv")
    _require(m, conf, ("E", "lo", "hi", "root", "mode"))
    _check_fields(m, conf, NEARLOSSLESS_FIELDS)
    if v >= 2:
        _require(m, conf, ("th", "kd"))
    else:
        for k in ("th", "kd"):
            if k in conf:
                raise _fail(m, k, conf[k], "absent in payload version 1")
    if not conf["lo"] <= conf["root"] <= conf["hi"] or not conf["lo"] <= conf["mode"] <= conf["hi"]:
        raise _fail(m, "root", conf["root"], "lo <= root, mode <= hi")


# --------------------------------------------------------------------------- entry point

_VALIDATORS: dict[str, Callable[[Mapping[str, Any], tuple[int, ...]], None]] = {
    "latent": validate_latent,
    "paper": validate_paper,
    "nearlossless": validate_nearlossless,
}


def validate_config(model: str, config: Any, shape: Any) -> None:
    """Check the configuration of a ``model``-family file fitted on ``shape`` before anything is built.

    Raises ``FormatError`` (bad type, value, consistency), ``LimitError`` (sizes beyond the documented
    limits) or ``UnsupportedVersionError`` (newer payload version, unknown family).
    """
    if model not in _VALIDATORS:
        from ..encoded import list_models

        if model not in list_models():
            raise UnsupportedVersionError(f"model family {model!r} is unknown to this inrv; upgrade")
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise FormatError("invalid .inrv model configuration: not a map with text keys")
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3 and all(_is_int(s) and s >= 1 for s in shape)):
        raise FormatError(f"invalid .inrv model configuration: fitted shape {shape!r} is not 3 positive ints")
    if config.get("model", model) != model:
        raise _fail(model, "model", config.get("model"), f"must be {model!r}")
    check = _VALIDATORS.get(model)
    if check is not None:       # a family without a table here (nearlossless) checks its payload in render
        check(config, tuple(shape))


# --------------------------------------------------------------------------- the decoder boundary

def is_library_panic(exc: BaseException) -> bool:
    """A Rust panic surfacing from a compiled library (constriction raises ``pyo3_runtime.PanicException``,
    a ``BaseException``: ``except Exception`` does not catch it)."""
    return type(exc).__name__ == "PanicException"


class payload_guard:
    """``with payload_guard("latent-model payload"):`` turns anything a hostile payload can make a
    library raise (``ValueError``, ``IndexError``, a Rust panic ...) into one ``FormatError`` line.
    ``InrvError`` subclasses, ``MemoryError``, ``KeyboardInterrupt`` and ``SystemExit`` pass through."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> "payload_guard":
        return self

    def __exit__(self, tp, exc, tb) -> bool:
        from ..errors import InrvError

        if exc is None or isinstance(exc, (InrvError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit)):
            return False
        if isinstance(exc, Exception) or is_library_panic(exc):
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise FormatError(f"cannot decode {self.what}: corrupt file ({detail})") from None
        return False


# --------------------------------------------------------------------------- memory a decode needs

def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``); None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_decode_memory(shape: Any, itemsize: int, what: str) -> None:
    """Refuse (``LimitError``) a decode whose output alone cannot fit: ``voxels * (4 + itemsize)`` bytes
    (the float32 rendering plus the restored dtype) against the memory available now. A lower bound:
    a file that declares more voxels than this machine can hold is refused as such, before anything
    is built, instead of ending in an out-of-memory error."""
    voxels = math.prod(int(s) for s in shape)
    need = voxels * (4 + int(itemsize))
    avail = available_memory()
    if avail is not None and need > avail:
        raise LimitError(f"{what} declares a {'x'.join(str(int(s)) for s in shape)} volume: decoding needs at "
                         f"least {need / 2 ** 30:.1f} GiB, more than the {avail / 2 ** 30:.1f} GiB available "
                         "(a corrupt file, or decode it on a larger machine)")
