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
            + f"{_num(secs, '.1f', ' s')}" + _stored_instead(summary))


def _stored_instead(summary: Any) -> str:
    """``; stored nearlossless (max error 2) instead of latent`` where compress chose another coder."""
    cfg = (getattr(summary, "details", None) or {}).get("config") or {}
    asked = cfg.get("fallback")
    if not isinstance(asked, str):
        return ""
    bound = cfg.get("max_error")
    what = "lossless" if bound in (0, 0.0) else f"near-lossless (max error {_num(bound, '.6g')})"
    return f"; stored {what} instead of {asked}"


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


# --------------------------------------------------------------------------- progress without a terminal

def _stderr_is_tty() -> bool:
    import sys

    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class LineProgress:
    """A ``progress(step, total, info)`` callback for logs: one plain line on stderr every ``interval``
    seconds (30 by default, ``INRV_PROGRESS_SECONDS``) or each 10 % of the steps, whichever comes
    first, with the elapsed time and the ETA. For stderr that is not a terminal (a log file, a
    scheduler, ``scripts/demo.sh`` piped): a tqdm bar there would print nothing useful or a mess.
    A fit that restarts its count (the latent model's rate search, then its final fit) starts a new phase.
    """

    def __init__(self, desc: str = "", interval: float | None = None, stream: Any = None) -> None:
        import os
        import time

        self.desc = desc
        env = os.environ.get("INRV_PROGRESS_SECONDS")
        self.interval = float(interval if interval is not None else (env or 30.0))
        self.stream = stream
        self._clock = time.monotonic
        self._t0 = self._phase_t0 = self._last = self._clock()
        self._total = None
        self._step = 0
        self._tenth = 0
        self._phase = 0

    def _emit(self, text: str) -> None:
        import sys

        stream = self.stream if self.stream is not None else sys.stderr
        try:
            print(text, file=stream, flush=True)
        except (OSError, ValueError):  # stderr gone: progress is not worth a failure
            pass

    def __call__(self, step: int, total: int, info: dict | None = None) -> None:
        now = self._clock()
        if total != self._total or step < self._step:
            self._total, self._phase_t0, self._tenth = total, now, 0
            self._phase += 1
        self._step = step
        tenth = int(10 * step / total) if total else 0
        if tenth <= self._tenth and now - self._last < self.interval:
            return
        self._tenth = max(self._tenth, tenth)
        self._last = now
        el = now - self._phase_t0
        eta = el / step * (total - step) if step > 0 and total else None
        extra = ""
        if info:
            extra = ", " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        phase = f" (phase {self._phase})" if self._phase > 1 else ""
        pct = f" ({100 * step / total:.0f} %)" if total else ""
        if isinstance(total, float) or isinstance(step, float):     # a time budget counts seconds, not steps
            where = f"{float(step):.0f} s of {float(total):.0f} s"
        else:
            where = f"step {step}/{total}"
        self._emit(f"inrv: {self.desc}{phase}: {where}{pct}, {duration(now - self._t0)} elapsed"
                   f"{', ETA ' + duration(eta) if eta is not None else ''}{extra}")

    def close(self) -> None:
        pass

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_progress(desc: str, enabled: bool | None):
    """The progress callback of one encode: a tqdm bar on a terminal (or with ``--progress``), plain
    lines (:class:`LineProgress`) when stderr is not a terminal, nothing with ``-q``/``--no-progress``."""
    from .options import ProgressBar

    if enabled is None and not _stderr_is_tty():
        return LineProgress(desc)
    return ProgressBar(desc=desc, enabled=enabled)


class BatchLines:
    """``on_row`` callback of ``inrv batch`` without a terminal: one line per finished input
    (``inrv batch: 3/10 ok scans/a.nii.gz -> out/a.inrv, 12.3 s; ETA 1 min 30 s``)."""

    def __init__(self, total: int, stream: Any = None) -> None:
        import time

        self.total = total
        self.done = 0
        self.stream = stream
        self._clock = time.monotonic
        self._t0 = self._clock()

    def __call__(self, row: dict[str, Any]) -> None:
        import sys

        self.done += 1
        el = self._clock() - self._t0
        eta = el / self.done * (self.total - self.done) if self.total > self.done else 0.0
        status = row.get("status", "?")
        what = row.get("input") or row.get("key") or "?"
        out = f" -> {row['output']}" if row.get("output") and status == "ok" else ""
        err = f": {row['error']}" if row.get("error") and status != "ok" else ""
        secs = row.get("seconds")
        took = f", {secs:.1f} s" if isinstance(secs, (int, float)) else ""
        text = (f"inrv batch: {self.done}/{self.total} {status} {what}{out}{err}{took}; "
                f"{duration(el)} elapsed, ETA {duration(eta)}")
        try:
            print(text, file=self.stream if self.stream is not None else sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
