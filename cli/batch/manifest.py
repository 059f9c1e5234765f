"""Batch, chapters 2 and 3: checksums and the manifest.

The manifest is ``DST/manifest*.jsonl``: one JSON row per finished job (schema :data:`SCHEMA`, columns in
``docs/batch.md``). Only the driver writes it (:class:`ManifestWriter`: one ``write`` + ``fsync`` per row);
:func:`read_manifests` reads every shard's file and skips a torn last line. :func:`input_checksum`,
:func:`input_stat` and :func:`config_identity` are the "same input, same config" tests of the plan.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from ...formats.jsonsafe import jsonable
from .discovery import Job

MANIFEST_GLOB = "manifest*.jsonl"
SCHEMA = "inrv-batch/1"


def manifest_name(shard_spec: tuple[int, int] | None) -> str:
    """``manifest.jsonl``, or ``manifest.shard-I-of-N.jsonl`` for shard I of N."""
    if shard_spec is None:
        return "manifest.jsonl"
    return f"manifest.shard-{shard_spec[0]}-of-{shard_spec[1]}.jsonl"


def input_checksum(job: Job) -> tuple[str, int]:
    """``("sha256:<hex>", bytes)`` of the input file, or of a series' files concatenated in sorted
    order."""
    h = hashlib.sha256()
    total = 0
    for p in (job.files or (job.src,)):
        with open(p, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                h.update(block)
                total += len(block)
    return "sha256:" + h.hexdigest(), total


def input_stat(job: Job) -> tuple[int, int]:
    """``(bytes, newest mtime in ns)`` of the input's file(s): the cheap "unchanged?" test."""
    size, mtime = 0, 0
    for p in (job.files or (job.src,)):
        st = os.stat(p)
        size += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
    return size, mtime


def config_identity(config: Any, overrides: dict[str, Any] | None = None, *,
                    keep_private: bool = False) -> tuple[str, dict[str, Any]]:
    """``(hash, config dict)`` of the effective encoder config (a preset name or a config object,
    plus ``overrides``): the manifest's "same config" test. ``keep_private`` changes the output's
    content, so it is part of the identity."""
    from ...codec.config import config_to_dict, make_config

    cfg = config_to_dict(make_config(config, **(overrides or {})))
    text = json.dumps({"config": cfg, "keep_private": bool(keep_private)}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16], cfg


def read_manifests(dst: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of every ``manifest*.jsonl`` in ``dst`` (shards included), file order kept.
    Lines that do not parse (a torn last line after a crash) are skipped."""
    rows: list[dict[str, Any]] = []
    folder = Path(dst)
    if not folder.is_dir():
        return rows
    for path in sorted(folder.glob(MANIFEST_GLOB)):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "input" in row and "status" in row:
                rows.append(row)
    return rows


class ManifestWriter:
    """Append-only JSONL writer: one ``os.write`` of a whole line per row, then ``fsync``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # a crash mid-write may have left a line without its newline: start on a fresh line
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    def append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(jsonable(row), sort_keys=False, allow_nan=False) + "\n").encode()
        os.write(self.fd, data)
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def finite(x: Any) -> float | None:
    """A number column of a row: rounded to 6 decimals; lossless PSNR (inf), undefined SSIM (nan) or no
    value are null (docs/batch.md)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None
