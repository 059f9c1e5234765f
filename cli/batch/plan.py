"""Batch, chapter 4: the plan. Per job: encode it, or skip it (done, or failed earlier), and why."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .discovery import Job
from .manifest import input_checksum, input_stat, read_manifests


@dataclass
class Planned:
    job: Job
    action: str                   # "encode", "done" (skip: complete and verified), "failed" (skip: failed earlier)
    reason: str = ""
    checksum: str | None = None
    previous: dict[str, Any] | None = None


def output_ok(dst: Path, row: dict[str, Any]) -> str | None:
    """None when the output of an ok row is complete (exists, size as recorded, header parses);
    otherwise why not."""
    from ... import info

    out = dst / row.get("output", "")
    try:
        size = out.stat().st_size
    except OSError:
        return "output missing"
    if row.get("output_bytes") is not None and size != row["output_bytes"]:
        return f"output size {size} != recorded {row['output_bytes']}"
    try:
        info(out)
    except Exception as e:  # noqa: BLE001 - any reason the header does not parse
        return f"output header does not parse: {e}"
    return None


def make_plan(jobs: list[Job], dst: str | os.PathLike, config_hash: str, *, retry_failed: bool = False,
              force: bool = False, rehash: bool = False) -> list[Planned]:
    """Decide, per job, whether to encode it or skip it, from every manifest in ``dst``.

    Skipped as done: an ok row with the same input checksum and config hash whose output exists,
    has the recorded size and a header that parses. Skipped as failed: the latest row for the same
    input, checksum and config failed and ``retry_failed`` is off. Everything else is encoded
    (``force`` encodes everything).

    The input's checksum is computed only for inputs that have rows, and only when its size or
    modification time differs from the row's (``input_bytes``, ``input_mtime_ns``); ``rehash``
    computes it always.
    """
    dst = Path(dst)
    rows_by_input: dict[str, list[dict[str, Any]]] = {}
    for row in read_manifests(dst):
        rows_by_input.setdefault(row["input"], []).append(row)
    plan = []
    for job in jobs:
        rows = [r for r in rows_by_input.get(job.key, []) if r.get("config_hash") == config_hash]
        if force or not rows:
            plan.append(Planned(job, "encode", "forced" if force and rows else "new"))
            continue
        try:
            size, mtime = input_stat(job)
            same = [r for r in rows if r.get("input_bytes") == size and r.get("input_mtime_ns") == mtime
                    and r.get("checksum")]
            if same and not rehash:
                checksum = max(same, key=lambda r: r.get("finished") or 0.0)["checksum"]
            else:
                checksum, _ = input_checksum(job)
        except OSError as e:
            plan.append(Planned(job, "encode", f"cannot read input: {e.strerror or e}"))
            continue
        rows = [r for r in rows if r.get("checksum") == checksum]
        if not rows:
            plan.append(Planned(job, "encode", "input changed", checksum))
            continue
        rows.sort(key=lambda r: r.get("finished") or 0.0)
        oks = [r for r in rows if r.get("status") == "ok" and r.get("output") == job.output]
        why = None
        if oks:
            why = output_ok(dst, oks[-1])
            if why is None:
                plan.append(Planned(job, "done", "complete", checksum, oks[-1]))
                continue
        last = rows[-1]
        if last.get("status") == "failed" and not retry_failed and why is None:
            plan.append(Planned(job, "failed", last.get("error") or "failed earlier", checksum, last))
            continue
        plan.append(Planned(job, "encode", why or "retry failed", checksum))
    return plan
