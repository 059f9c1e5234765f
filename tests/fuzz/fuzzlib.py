"""Structure-aware fuzzing of the ``.inrv`` reader and decoders (seeded, reproducible).

A *case* is a golden file (``tests/golden/v1/*.inrv``) plus a short list of *operations* that rewrite
its header fields (anywhere in the tree, the model configuration included) or its sections; the file
is then rebuilt with correct checksums (``build``), so that the mutation gets past the CRCs and
reaches the validators and decoders. Each case is then opened, described and decoded the way the
CLI does it (``read`` + ``info`` with the model-config check, ``render``, ``restore_dtype``).

The contract checked by ``run_case``: the only exceptions are ``InrvError`` subclasses (a corrupt
file is one clear line, never a traceback); everything else (``ValueError`` from deep inside a
library, a Rust ``PanicException``, a ``MemoryError``) is a *crash*. Time and memory per case are
measured by the callers (``test_fuzz.py`` in the suite, ``fuzz.py`` for long runs).

Operations are plain JSON, so a case that once crashed is kept verbatim in ``regressions.json`` and
replayed forever, whatever later changes to the random generator::

    ["set", ["c", "levels"], 0]          replace a value (path of map keys / list indices)
    ["del", ["c", "sym_range"]]          delete a map key or list item
    ["sec", "latents", "trunc", 7]       sections: trunc N | flip POS | drop | empty | dup
    ["raw", 40, 255]                     after rebuilding: set byte POS of the stored header, fix the CRC

Values that JSON cannot hold are tagged: ``{"$f": "inf"}`` (floats inf/-inf/nan), ``{"$b": "00ff"}`` (bin).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import resource
import struct
import zlib
from pathlib import Path
from typing import Any

from inrv.errors import InrvError
from inrv.formats import container
from inrv.formats.container import Limits

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1"
REGRESSIONS = Path(__file__).resolve().with_name("regressions.json")

#: reader limits of the fuzz run: 4x the golden files' voxels, so that a mutated shape decodes in
#: bounded time (the decode work of a valid file is proportional to its voxels, up to max_voxels)
FUZZ_LIMITS = Limits(max_voxels=1 << 14)

INTERESTING: list[Any] = [
    0, 1, -1, 2, 3, 5, 7, 8, 27, 255, 256, 65535, 65536, 1 << 31, (1 << 31) - 1, 1 << 32, 1 << 53,
    (1 << 63) - 1, -(1 << 63), (1 << 64) - 1, -2, -(1 << 31),
    0.0, -0.0, 0.5, 1.5, 1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan,
    None, True, False, "", "x", "linear", "cubic", "paper", "latent", "affine-v1", "z" * 70,
    [], [0], [1, 2], [0, 0, 0], [1, 1, 1], [-1, 5], [5, -1], [3, 3], [1 << 31, 1, 1], [math.inf, 1, 1],
    [[1, 2]], [[0.5, 0.5]] * 5, {}, {"a": 1}, b"", b"\x00" * 4, b"\xff" * 348,
]


# --------------------------------------------------------------------------- JSON <-> values

def to_json(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return {"$f": str(v)}
    if isinstance(v, bytes):
        return {"$b": v.hex()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v


def from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"$f"}:
            return float(v["$f"])
        if set(v) == {"$b"}:
            return bytes.fromhex(v["$b"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


# --------------------------------------------------------------------------- files

def load_golden() -> dict[str, tuple[dict[str, Any], dict[str, bytes]]]:
    """name -> (header without the section table, decoded sections) of every golden file."""
    out = {}
    for p in sorted(GOLDEN.glob("*.inrv")):
        buf = p.read_bytes()
        layout = container.read_header(buf)
        out[p.stem] = (layout.header, container.decode_sections(buf, layout))
    return out


def build(header: dict[str, Any], sections: dict[str, bytes]) -> bytes:
    """An ``.inrv`` file with this header and these (raw-stored) sections and correct checksums,
    whatever the header holds (the writer's own checks are bypassed on purpose)."""
    table = [[name, 0, len(data), zlib.crc32(data)] for name, data in sections.items()]
    full = dict(header)
    full["_s"] = table
    raw = msgpack_packb(full)
    pre = struct.pack("<BBBI", 1, 0, 0, len(raw))
    return b"".join([container.MAGIC, pre, struct.pack("<I", zlib.crc32(raw, zlib.crc32(pre))), raw,
                     *sections.values()])


def msgpack_packb(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, use_bin_type=True, use_single_float=False)


def fix_header_byte(buf: bytes, pos: int, value: int) -> bytes:
    """Set byte ``pos`` of the stored header and recompute the header CRC."""
    n = struct.unpack_from("<I", buf, 12)[0]
    if n == 0:
        return buf
    pos = pos % n
    b = bytearray(buf)
    b[20 + pos] = value & 0xFF
    struct.pack_into("<I", b, 16, zlib.crc32(bytes(b[20:20 + n]), zlib.crc32(bytes(b[9:16]))))
    return bytes(b)


# --------------------------------------------------------------------------- operations

def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list) and len(obj) <= 64:
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj: Any, path) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def _near(v: Any, rng: random.Random) -> Any:
    """A value near ``v`` of the same type (off by one, doubled, halved, negated, a list grown or cut)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return rng.choice([v + 1, v - 1, v * 2, v // 2, -v, v * 1000, v + (1 << 16), 0])
    if isinstance(v, float):
        return rng.choice([v * 2, v / 2, -v, v + 1, 0.0, v * 1e10])
    if isinstance(v, list):
        if v and rng.random() < 0.5:
            return v[:-1]
        return v + ([copy.deepcopy(v[-1])] if v else [0])
    if isinstance(v, str):
        return rng.choice([v + "x", v[:-1], v.upper()])
    if isinstance(v, bytes):
        return v[:-1]
    return None


def random_ops(rng: random.Random, header: dict[str, Any], sections: dict[str, bytes]) -> list[list[Any]]:
    ops: list[list[Any]] = []
    h = header
    paths = _paths(h)
    cpaths = [p for p in paths if p[0] == "c"]
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        r = rng.random()
        if r < 0.45:        # a model-config value (the decoders' inputs)
            path = rng.choice(cpaths or paths)
        elif r < 0.75:      # anywhere in the header
            path = rng.choice(paths)
        elif r < 0.82:
            path = rng.choice(paths)
            ops.append(["del", list(path)])
            continue
        elif r < 0.95:      # a section
            name = rng.choice(sorted(sections))
            n = len(sections[name])
            kind = rng.choice(["trunc", "flip", "flip", "flip", "drop", "empty", "dup"])
            ops.append(["sec", name, kind, rng.randrange(max(1, n))])
            continue
        else:               # a raw byte of the stored header (msgpack structure), CRC fixed
            ops.append(["raw", rng.randrange(1 << 16), rng.randrange(256)])
            continue
        cur = _get(h, path)
        value = _near(cur, rng) if rng.random() < 0.4 else copy.deepcopy(rng.choice(INTERESTING))
        ops.append(["set", list(path), to_json(value)])
    return ops


def apply_ops(header: dict[str, Any], sections: dict[str, bytes], ops: list[list[Any]]) -> bytes:
    """The file bytes of ``header``/``sections`` after ``ops`` (inputs are not modified)."""
    h = copy.deepcopy(header)
    secs = dict(sections)
    raws = []
    for op in ops:
        kind = op[0]
        if kind in ("set", "del"):
            path = op[1]
            try:
                parent = _get(h, path[:-1])
                if kind == "set":
                    parent[path[-1]] = from_json(op[2])
                else:
                    del parent[path[-1]]
            except (KeyError, IndexError, TypeError):
                continue        # an earlier operation removed or retyped the path
        elif kind == "sec":
            _, name, what, pos = op
            if name not in secs:
                continue
            data = secs[name]
            if what == "trunc":
                secs[name] = data[:pos]
            elif what == "flip" and data:
                b = bytearray(data)
                b[pos % len(b)] ^= 1 << (pos % 8)
                secs[name] = bytes(b)
            elif what == "drop":
                del secs[name]
            elif what == "empty":
                secs[name] = b""
            elif what == "dup":
                secs[name] = data + data
        elif kind == "raw":
            raws.append(op)
    buf = build(h, secs)
    for _, pos, value in raws:
        buf = fix_header_byte(buf, pos, value)
    return buf


# --------------------------------------------------------------------------- running a case

#: decoder input -> its rendering, for inputs already decoded once (a mutation of the geometry, the
#: intensity facts or the metrics leaves the decoder's input as it was: no need to decode it again)
_RENDERED: dict[bytes, Any] = {}


def _decoder_input_key(f) -> bytes:
    import hashlib

    e = f.encoded
    h = hashlib.sha256(msgpack_packb([e.model, e.config, list(e.shape), list(e.value_range)]))
    for name in sorted(e.sections):
        h.update(name.encode() + b"\0" + hashlib.sha256(e.sections[name]).digest())
    return h.digest()


def run_case(buf: bytes, limits: Limits = FUZZ_LIMITS) -> str:
    """Open, describe and decode ``buf`` as the CLI would. Returns ``"ok"`` or the ``InrvError`` class
    name; anything else propagates (a crash)."""
    from inrv.codec.base import get_model
    from inrv.codec.schema import validate_config
    from inrv.formats.inrvfile import inrv_info, read_inrv
    from inrv.formats.io import restore_dtype

    try:
        inrv_info(buf, limits=limits, check_config=validate_config)
        f = read_inrv(buf, limits=limits, check_config=validate_config)
        key = _decoder_input_key(f)
        data = _RENDERED.get(key)
        if data is None:
            data = get_model(f.encoded.model).render(f.encoded, device="cpu")
            if len(_RENDERED) < 64:
                _RENDERED[key] = data
        restore_dtype(data.copy(), f.intensity)
    except InrvError as e:
        return type(e).__name__
    return "ok"


def case_ops(seed: int, index: int, golden: dict) -> tuple[str, list[list[Any]]]:
    """The golden file and operations of case ``index`` of run ``seed`` (deterministic)."""
    rng = random.Random(seed * 1_000_003 + index)
    name = rng.choice(sorted(golden))
    header, sections = golden[name]
    return name, random_ops(rng, header, sections)


def load_regressions() -> list[dict[str, Any]]:
    if not REGRESSIONS.exists():
        return []
    return json.loads(REGRESSIONS.read_text(encoding="utf-8"))["cases"]


# ----------------------------------------------------------------------------- memory of this process

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_bytes() -> int:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
