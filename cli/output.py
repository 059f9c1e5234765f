"""What the commands print: one-line summaries (stderr) and JSON documents (stdout).

JSON is strict (RFC 8259): numpy scalars become numbers, bytes become ``{"bytes": length}``, and
non-finite floats become ``null`` (``inrv info`` itself already writes them as the strings ``"inf"``...).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"bytes": len(obj)}
    if isinstance(obj, Path):
        return str(obj)
    # numpy scalars and arrays, without importing numpy here
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def dumps(obj: Any) -> str:
    """One line of strict JSON."""
    return json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"), sort_keys=False)


def find(d: Any, *names: str) -> Any:
    """The value of the first of ``names`` found in ``d`` (a dict) or, breadth-first, in its nested dicts."""
    queue = [d]
    while queue:
        level = []
        for item in queue:
            if not isinstance(item, dict):
                continue
            for name in names:
                if name in item and item[name] is not None and not isinstance(item[name], dict):
                    return item[name]
            level.extend(v for v in item.values() if isinstance(v, dict))
        queue = level
    return None


def human_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _num(v: Any, fmt: str, unit: str = "") -> str:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):   # how inrv info stores non-finite numbers
        return v + unit
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "?"
    if isinstance(v, float) and math.isinf(v):
        return "inf" + unit
    return format(v, fmt) + unit


def encode_summary_line(src: Any, dst: Any, summary: dict[str, Any]) -> str:
    """``scan.nii.gz -> scan.inrv: 3.2 KiB, 0.400 bpv, PSNR 31.20 dB, SSIM 0.912, 8.1 s``."""
    size = find(summary, "file_bytes", "file_size", "bytes")
    bpv = find(summary, "bpv", "bits_per_voxel")
    psnr = find(summary, "psnr", "psnr_db")
    ssim = find(summary, "ssim")
    secs = find(summary, "seconds", "encode_seconds")
    err = find(summary, "max_abs_err")
    return (f"{src} -> {dst}: {human_bytes(size)}, {_num(bpv, '.3f')} bpv, PSNR {_num(psnr, '.2f', ' dB')}, "
            f"SSIM {_num(ssim, '.4f')}, max|err| {_num(err, '.6g')}, {_num(secs, '.1f', ' s')}")


def decode_summary_line(src: Any, dst: Any, shape: Any, dtype: Any, seconds: float) -> str:
    """``scan.inrv -> out.nii.gz: 64x64x64 uint8, 1.2 s``."""
    dims = "x".join(str(int(s)) for s in shape) if shape is not None else "?"
    return f"{src} -> {dst}: {dims} {dtype}, {seconds:.1f} s"


def info_text(d: dict[str, Any]) -> str:
    """The human-readable ``inrv info`` block: ``formats.inrvfile.format_info_text`` when present,
    else a plain ``key: value`` listing."""
    try:
        from ..formats.inrvfile import format_info_text
    except ImportError:  # pragma: no cover - only while the container module is missing
        format_info_text = None
    if format_info_text is not None:
        return format_info_text(d).rstrip("\n")
    lines = []
    for k, v in d.items():
        lines.append(f"{k:<12} {dumps(v) if isinstance(v, (dict, list)) else v}")
    return "\n".join(lines)
