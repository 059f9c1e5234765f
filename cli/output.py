"""What the commands print: one-line summaries (stderr) and JSON documents (stdout).

JSON is strict (RFC 8259), with the one policy of :mod:`inrv.formats.jsonsafe` (non-finite numbers as the
strings ``"inf"``..., bytes as ``"<N bytes>"``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..formats.jsonsafe import jsonable


def dumps(obj: Any) -> str:
    """One line of strict JSON."""
    return json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"), sort_keys=False)


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


def encode_summary_line(src: Any, dst: Any, summary: Any) -> str:
    """``scan.nii.gz -> scan.inrv: 3.2 KiB, 0.400 bpv, PSNR 31.20 dB, SSIM 0.912, 8.1 s`` from an
    :class:`inrv.Summary`."""
    secs = summary.seconds if summary.seconds is not None else summary.encode_seconds
    return (f"{src} -> {dst}: {human_bytes(summary.file_bytes)}, {_num(summary.bpv, '.3f')} bpv, "
            f"PSNR {_num(summary.psnr, '.2f', ' dB')}, SSIM {_num(summary.ssim, '.4f')}, "
            + (f"max|err| {_num(summary.max_abs_err, '.6g')}, " if summary.max_abs_err is not None else "")
            + f"{_num(secs, '.1f', ' s')}")


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
