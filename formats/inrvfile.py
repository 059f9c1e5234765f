"""``.inrv`` files: an :class:`~inrv.encoded.Encoded` plus the original volume's facts.

    n = write_inrv("scan.inrv", encoded, volume)    # bytes written (atomic; voxels are not stored)
    f = read_inrv("scan.inrv")                      # validated, checksummed -> InrvFile
    d = inrv_info("scan.inrv")                      # JSON-able facts, no section decompressed
    print(format_info_text(d))

The header schema (short keys, every one documented in ``docs/format.md``) is validated in full
before anything is returned: types, finite floats, positive shape with at most ``max_voxels``
voxels, known dtype and model family, and the must-understand rule (``"mu"``). Nothing here
imports torch, so ``inrv info`` stays fast and works without it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..encoded import Encoded, list_models
from ..errors import FormatError, InputError, LimitError, UnsupportedVersionError
from .atomic import atomic_output
from .jsonsafe import jsonable as _jsonable
from .container import (DEFAULT_LIMITS, MAGIC, Layout, Limits, decode_sections, describe_foreign, pack,
                        read_header)
from .volume import SUPPORTED_DTYPES, Geometry, Intensity, Volume

# Features a file may list under "mu" (must understand). A reader refuses a file that lists a
# feature it does not know (UnsupportedVersionError). Format 1.0 defines none; see docs/format.md.
KNOWN_FEATURES: frozenset[str] = frozenset()

INFO_SCHEMA = "inrv-info/1"
_MAX_STR = 64
_ITEMSIZE = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4, "float32": 4, "float64": 8}


@dataclass
class InrvFile:
    """A parsed, validated ``.inrv`` file."""

    encoded: Encoded
    geometry: Geometry
    intensity: Intensity
    source: dict[str, Any]
    shape: tuple[int, int, int]             # the original volume's shape (array axis order)
    header: dict[str, Any]                  # the raw header map (short keys), section table removed
    file_bytes: int
    version: tuple[int, int] = (1, 0)
    layout: Layout | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- writing

#: the encode-time figures a file keeps (what ``inrv info`` shows and what users compare). The rest
#: of ``Encoded.stats`` (training diagnostics: losses, byte counts, lambda searches) stays in memory:
#: every header byte is rate (0.1 kB is 0.003 bits/voxel on a 64^3 volume).
STORED_STATS = ("psnr", "ssim", "max_abs_err", "data_range", "encode_seconds", "device", "steps", "lossless_check",
                "train_seconds", "params", "blocks", "active_blocks")


def build_header(encoded: Encoded, volume: Volume) -> dict[str, Any]:
    """The header map for ``encoded`` fitted on ``volume`` (voxels are not stored, only facts)."""
    from .. import __version__

    if encoded.model not in list_models():
        raise InputError(f"unknown model family {encoded.model!r}")
    shape = _shape_of(volume.shape, "volume shape")
    fitted = _shape_of(encoded.shape, "encoded shape")
    if not isinstance(encoded.config, dict):
        raise InputError("encoded.config must be a dict")
    config = dict(encoded.config)
    if config.get("model") == encoded.model:
        del config["model"]          # the family is stored once, under "m"
    g, it = volume.geometry, volume.intensity
    if it is None:
        raise InputError("volume has no intensity facts")
    h: dict[str, Any] = {
        "e": str(__version__),
        "m": encoded.model,
        "c": config,
        "s": list(shape),
    }
    if fitted != shape:
        h["es"] = list(fitted)
    h["r"] = [_cf(v) for v in encoded.value_range]
    h["g"] = {"sp": [_cf(v) for v in g.spacing], "o": [_cf(v) for v in g.origin],
              "d": [_cf(v) for v in g.direction]}
    ih: dict[str, Any] = {"dt": str(it.dtype), "sl": _cf(it.slope), "ic": _cf(it.intercept),
                          "mn": _cf(it.min), "mx": _cf(it.max)}
    if it.units is not None:
        ih["u"] = str(it.units)
    h["i"] = ih
    h["src"] = dict(volume.source) if volume.source else {"kind": "array"}
    st = {k: v for k, v in (encoded.stats or {}).items() if k in STORED_STATS}
    if st:
        h["st"] = st
    # validate what we are about to write with the reader's own rules (never write an unreadable file)
    _parse(h, DEFAULT_LIMITS)
    return h


def to_bytes(encoded: Encoded, volume: Volume) -> bytes:
    """The whole ``.inrv`` file as bytes."""
    return pack(build_header(encoded, volume), encoded.sections)


def write_inrv(path: str | os.PathLike, encoded: Encoded, volume: Volume, *, force: bool = False) -> int:
    """Write ``encoded`` (fitted on ``volume``) to ``path`` atomically; returns the bytes written."""
    buf = to_bytes(encoded, volume)
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf)
    return len(buf)


def _cf(v: Any) -> int | float:
    """A float stored compactly: integral values as msgpack ints (1-9 bytes instead of 9).

    Readers turn ints back into float64; -0.0 and values beyond 2**53 stay floats (exactness).
    """
    v = float(v)
    if v.is_integer() and abs(v) < 2.0 ** 53 and not (v == 0.0 and math.copysign(1.0, v) < 0):
        return int(v)
    return v


def _shape_of(shape: Any, what: str) -> tuple[int, int, int]:
    try:
        t = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{what} {shape!r} is not a tuple of ints") from None
    if len(t) != 3 or any(s < 1 for s in t):
        raise InputError(f"{what} {t} must be 3 positive ints")
    return t  # type: ignore[return-value]


# --------------------------------------------------------------------------- reading

def _read_file(path: str | os.PathLike | bytes | bytearray | memoryview, limits: Limits) -> tuple[bytes, str | None]:
    if isinstance(path, (bytes, bytearray, memoryview)):
        return bytes(path), None
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(len(MAGIC))
            if head != MAGIC:
                if len(head) < len(MAGIC) and head and MAGIC.startswith(head):
                    raise FormatError(f"{p}: truncated .inrv file")
                what = describe_foreign(head + f.read(512))
                raise FormatError(f"{p}: not an .inrv file" + (f" (looks like {what})" if what else ""))
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_file_bytes:
                raise LimitError(f"{p}: {size} bytes exceed the limit of {limits.max_file_bytes}")
            return head + f.read(limits.max_file_bytes + 1 - len(head)), str(p)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a folder, not an .inrv file") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e})") from None


def _open(path: Any, limits: Limits | None) -> tuple[bytes, Layout, dict[str, Any], str | None]:
    limits = DEFAULT_LIMITS if limits is None else limits
    buf, name = _read_file(path, limits)
    try:
        layout = read_header(buf, limits)
        parsed = _parse(layout.header, limits)
    except FormatError as e:
        if name is not None and not str(e).startswith(name):
            raise type(e)(f"{name}: {e}") from None
        raise
    return buf, layout, parsed, name


def read_inrv(path: str | os.PathLike | bytes, *, limits: Limits | None = None) -> InrvFile:
    """Open and fully verify an ``.inrv`` file (a path, or the file's bytes)."""
    buf, layout, p, name = _open(path, limits)
    try:
        sections = decode_sections(buf, layout, DEFAULT_LIMITS if limits is None else limits)
    except FormatError as e:
        raise type(e)(f"{name}: {e}" if name else str(e)) from None
    enc = Encoded(model=p["model"], config=p["config"], sections=sections, shape=p["fitted_shape"],
                  value_range=p["value_range"], stats=p["stats"])
    return InrvFile(encoded=enc, geometry=p["geometry"], intensity=p["intensity"], source=p["source"],
                    shape=p["shape"], header=layout.header, file_bytes=layout.file_bytes,
                    version=layout.version, layout=layout)


def _bad(key: str, what: str) -> FormatError:
    return FormatError(f"invalid .inrv header: {key} {what}")


def _float(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(key, "must be a number")
    try:
        f = float(v)
    except OverflowError:
        raise _bad(key, "is out of range") from None
    if not math.isfinite(f):
        raise _bad(key, "must be finite")
    return f


def _floats(v: Any, n: int, key: str) -> tuple[float, ...]:
    if not isinstance(v, list) or len(v) != n:
        raise _bad(key, f"must be a list of {n} numbers")
    return tuple(_float(x, f"{key}[{i}]") for i, x in enumerate(v))


def _str(v: Any, key: str, max_len: int = _MAX_STR) -> str:
    if not isinstance(v, str) or not (0 < len(v) <= max_len):
        raise _bad(key, f"must be a string of 1-{max_len} characters")
    return v


def _map(v: Any, key: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(key, "must be a map")
    return v


def _shape(v: Any, key: str, limits: Limits) -> tuple[int, int, int]:
    if not isinstance(v, list) or len(v) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in v):
        raise _bad(key, "must be a list of 3 ints")
    if any(s < 1 for s in v):
        raise _bad(key, "must be positive")
    n = v[0] * v[1] * v[2]
    if n > limits.max_voxels:
        raise LimitError(f"volume shape {tuple(v)} has {n} voxels, over the limit of {limits.max_voxels}")
    return (v[0], v[1], v[2])


def _parse(h: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate the header map; return its parts as Python objects (raises FormatError subclasses)."""
    mu = h.get("mu", [])
    if not isinstance(mu, list) or not all(isinstance(x, str) for x in mu):
        raise _bad("mu", "must be a list of strings")
    unknown = [x for x in mu if x not in KNOWN_FEATURES]
    if unknown:
        raise UnsupportedVersionError(
            f"the file needs feature(s) {', '.join(map(repr, unknown))} unknown to this inrv; upgrade")
    for k in ("e", "m", "c", "s", "r", "g", "i", "src"):
        if k not in h:
            raise _bad(k, "is missing")
    _str(h["e"], "e")
    model = _str(h["m"], "m")
    if model not in list_models():
        raise UnsupportedVersionError(f"model family {model!r} is unknown to this inrv; upgrade")
    config = dict(_map(h["c"], "c"))
    config.setdefault("model", model)
    if config["model"] != model:
        raise _bad("c.model", f"{config['model']!r} differs from m={model!r}")
    shape = _shape(h["s"], "s", limits)
    fitted = _shape(h["es"], "es", limits) if "es" in h else shape
    lo, hi = _floats(h["r"], 2, "r")
    if lo > hi:
        raise _bad("r", "must have lo <= hi")
    g = _map(h["g"], "g")
    for k in ("sp", "o", "d"):
        if k not in g:
            raise _bad(f"g.{k}", "is missing")
    spacing = _floats(g["sp"], 3, "g.sp")
    if any(s <= 0 for s in spacing):
        raise _bad("g.sp", "must be positive")
    geometry = Geometry(spacing, _floats(g["o"], 3, "g.o"), _floats(g["d"], 9, "g.d"))  # type: ignore[arg-type]
    i = _map(h["i"], "i")
    for k in ("dt", "sl", "ic", "mn", "mx"):
        if k not in i:
            raise _bad(f"i.{k}", "is missing")
    if i["dt"] not in SUPPORTED_DTYPES:
        raise _bad("i.dt", f"must be one of {', '.join(SUPPORTED_DTYPES)}")
    units = _str(i["u"], "i.u") if i.get("u") is not None else None
    intensity = Intensity(dtype=i["dt"], slope=_float(i["sl"], "i.sl"), intercept=_float(i["ic"], "i.ic"),
                          units=units, min=_float(i["mn"], "i.mn"), max=_float(i["mx"], "i.mx"))
    if intensity.min > intensity.max:
        raise _bad("i", "must have mn <= mx")
    source = dict(_map(h["src"], "src"))
    _str(source.get("kind"), "src.kind")
    nh = source.get("nifti_header")
    if nh is not None and not (isinstance(nh, bytes) and len(nh) in (348, 540)):
        raise _bad("src.nifti_header", "must be 348 or 540 bytes")
    if "dicom" in source and not isinstance(source["dicom"], dict):
        raise _bad("src.dicom", "must be a map")
    stats = dict(_map(h.get("st", {}), "st"))
    return {"model": model, "config": config, "shape": shape, "fitted_shape": fitted, "value_range": (lo, hi),
            "geometry": geometry, "intensity": intensity, "source": source, "stats": stats,
            "encoder": h["e"], "features": list(mu)}


# --------------------------------------------------------------------------- info

def inrv_info(path: str | os.PathLike | bytes, *, limits: Limits | None = None) -> dict[str, Any]:
    """JSON-able facts about an ``.inrv`` file, checksums verified, no section decompressed.

    ``bpv`` = 8 * file_bytes / voxels, from the real file size.
    """
    buf, layout, p, name = _open(path, limits)
    shape = p["shape"]
    voxels = shape[0] * shape[1] * shape[2]
    it: Intensity = p["intensity"]
    g: Geometry = p["geometry"]
    raw_bytes = voxels * _ITEMSIZE[it.dtype]
    d: dict[str, Any] = {"schema": INFO_SCHEMA}
    if name is not None:
        d["path"] = name
    d.update({
        "format_version": f"{layout.version[0]}.{layout.version[1]}",
        "encoder_version": p["encoder"],
        "model": p["model"],
        "config": _jsonable(p["config"]),
        "shape": list(shape),
        "voxels": voxels,
        "dtype": it.dtype,
        "spacing": list(g.spacing),
        "origin": list(g.origin),
        "direction": list(g.direction),
        "spatial_units": "mm",
        "frame": "LPS",
        "intensity": {"min": it.min, "max": it.max, "slope": it.slope, "intercept": it.intercept,
                      "units": it.units},
        "value_range": list(p["value_range"]),
        "source": _jsonable(p["source"]),
        "metrics": _jsonable(p["stats"]),
        "file_bytes": layout.file_bytes,
        "raw_bytes": raw_bytes,
        "ratio": raw_bytes / layout.file_bytes,
        "bpv": 8.0 * layout.file_bytes / voxels,
        "layout": {
            "header_bytes": layout.header_bytes,
            "header_compressed": layout.header_compressed,
            "header_codec": layout.header_codec,
            "sections": [{"name": s.name, "codec": s.codec, "stored_bytes": s.stored_bytes,
                          "raw_bytes": s.raw_bytes} for s in layout.sections],
        },
        "integrity": "ok",
    })
    if p["fitted_shape"] != shape:
        d["fitted_shape"] = list(p["fitted_shape"])
    if p["features"]:
        d["features"] = p["features"]
    return d


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024.0
    return f"{n} B"  # unreachable


def _g(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def format_info_text(d: dict[str, Any]) -> str:
    """A human-readable block for one ``inrv_info`` dict."""
    lines = []
    name = d.get("path", "<bytes>")
    lines.append(f"{name}  {_size(d['file_bytes'])}  inrv format {d['format_version']}  "
                 f"(encoder inrv {d['encoder_version']})")
    ident = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    direction = "identity" if list(d["direction"]) == ident else "(" + ", ".join(_g(v) for v in d["direction"]) + ")"
    lines.append(f"volume     {' x '.join(map(str, d['shape']))}  {d['dtype']}  spacing "
                 f"{' x '.join(_g(v) for v in d['spacing'])} mm  direction {direction} (LPS)  "
                 f"origin ({', '.join(_g(v) for v in d['origin'])})")
    it = d["intensity"]
    units = f"  units {it['units']}" if it.get("units") else ""
    src = d.get("source", {}).get("kind", "?")
    lines.append(f"intensity  range [{_g(it['min'])}, {_g(it['max'])}]  slope {_g(it['slope'])} "
                 f"intercept {_g(it['intercept'])}{units}   source {src}")
    cfg = d.get("config", {})
    items = []
    for k, v in cfg.items():
        if k == "model" or isinstance(v, dict) or (isinstance(v, list) and (
                len(v) > 4 or any(isinstance(x, (list, dict)) for x in v))):
            continue  # quantisation tables etc.: see --json
        items.append(f"{k}={','.join(map(_g, v)) if isinstance(v, list) else _g(v)}")
    lines.append(f"model      {d['model']}  " + " ".join(items))
    lay = d["layout"]
    parts = [f"header {lay['header_bytes']} B ({lay.get('header_codec', 'raw')})"]
    for s in lay["sections"]:
        extra = f", {s['raw_bytes']} B raw" if s["codec"] == "zstd" else ""
        parts.append(f"{s['name']} {s['stored_bytes']} B ({s['codec']}{extra})")
    lines.append(f"size       {d['file_bytes']} B = " + " + ".join(parts))
    lines.append(f"ratio      {d['ratio']:.1f}:1 vs raw ({_size(d['raw_bytes'])});  {d['bpv']:.4g} bits/voxel")
    m = d.get("metrics", {})
    q = []
    if "psnr" in m:
        q.append(f"PSNR {_g(m['psnr'])} dB (peak = data range)")
    if "ssim" in m:
        q.append(f"SSIM {_g(m['ssim'])}")
    if "max_abs_err" in m:
        q.append(f"max|err| {_g(m['max_abs_err'])}")
    if q:
        lines.append("quality    " + "  ".join(q) + "  (measured at encode)")
    lines.append(f"integrity  header and {len(lay['sections'])} section checksums {d.get('integrity', '?')}")
    return "\n".join(lines)
