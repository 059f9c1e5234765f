"""Batch, chapter 6: the job. :func:`run_job` encodes one input on a Dask worker and returns one manifest row.

It takes a plain dict (:func:`job_spec`, picklable), claims the output with an :class:`~.locks.OutputLock`,
calls the public :func:`inrv.compress` and never raises for a bad input: a failure is a row with
``status="failed"``. ``--verify`` decodes the output with :func:`inrv.restore` and compares it with the input.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from ...errors import InrvError
from ..options import classify_error, is_out_of_memory
from .discovery import Job
from .locks import DEFAULT_STALE_LOCK_SECONDS, OutputLock, remove_stale_temps
from .manifest import SCHEMA, finite, input_checksum, input_stat, read_manifests

VERIFY_PSNR_TOL_DB = 0.05
# the columns of a manifest row, in order (docs/batch.md)
ROW_COLUMNS = ("schema", "input", "kind", "series_uid", "checksum", "input_bytes", "input_mtime_ns", "output",
               "output_bytes", "bpv", "psnr", "ssim", "seconds", "device", "status", "error_type", "error",
               "verified", "preset", "options", "config_hash", "inrv_version", "attempt_note", "started",
               "finished")


def new_row(spec: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A manifest row for ``spec``: every column, ``status="failed"`` until the job says otherwise."""
    row: dict[str, Any] = dict.fromkeys(ROW_COLUMNS)
    row.update(schema=SCHEMA, input=spec["key"], kind=spec["kind"], series_uid=spec.get("series_uid"),
               output=spec["output"], status="failed", preset=spec.get("preset"),
               options=spec.get("options") or {}, config_hash=spec["config_hash"])
    row.update(values)
    return row


def _done_by_another_run(spec: dict[str, Any], out: Path, checksum: str) -> bool:
    """True when ``out`` was written after this run made its plan *and* some manifest already has an
    ok row for it (same input checksum, config and size): an overlapping run did this input
    meanwhile. (An output newer than the plan without such a row is from an earlier attempt of this
    very task, whose worker died: it is encoded again.) Reads the manifests only in that rare case."""
    planned_at = spec.get("planned_at")
    try:
        st = out.stat()
    except OSError:
        return False
    if planned_at is None or st.st_mtime <= planned_at:
        return False
    return any(r.get("input") == spec["key"] and r.get("status") == "ok" and r.get("checksum") == checksum
               and r.get("config_hash") == spec["config_hash"] and r.get("output_bytes") == st.st_size
               for r in read_manifests(spec["dst"]))


@contextlib.contextmanager
def _series_source(spec: dict[str, Any]) -> Iterator[str]:
    """The path to hand to ``inrv.compress`` for a DICOM series: its folder when the folder holds
    exactly this series, else a temporary folder of symbolic links to the series' files."""
    files = spec.get("files") or []
    folder = Path(spec["src"])
    others = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    if {Path(f).name for f in files} == others:
        yield str(folder)
        return
    tmp = Path(tempfile.mkdtemp(prefix="inrv-series-"))
    try:
        for f in files:
            os.symlink(f, tmp / Path(f).name)
        yield str(tmp)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _pick_device(spec: dict[str, Any]) -> str | None:
    """``cuda`` on a local cluster (one worker per GPU) -> ``cuda:<worker index>``."""
    device = spec.get("device")
    if device in (None, "cuda", "auto") and spec.get("pin_gpu"):
        try:
            from distributed import get_worker

            name = get_worker().name
            import torch

            if torch.cuda.is_available() and isinstance(name, int):
                return f"cuda:{name % torch.cuda.device_count()}"
        except Exception:  # noqa: BLE001 - not on a worker / no torch: keep the requested name
            pass
    return device


def verify_output(src: str, out: str, recorded_psnr: float | None, tol_db: float = VERIFY_PSNR_TOL_DB,
                  device: str | None = "cpu") -> str | None:
    """Decode ``out`` (:func:`inrv.restore`: what ``inrv decode`` would write) and compare it with the
    input ``src``: shape, geometry, PSNR equal to the recorded one within ``tol_db``.
    Returns None when it matches, else why not."""
    import numpy as np

    import inrv
    from ...codec.metrics import psnr

    vol = inrv.load(src)
    shape = tuple(inrv.info(out).shape)
    if shape != tuple(vol.shape):
        return f"shape {shape} != input {tuple(vol.shape)}"
    restored = inrv.restore(out, device="cpu" if device in (None, "auto") else device)
    g, h = restored.geometry, vol.geometry
    for name in ("spacing", "origin", "direction"):
        a, b = np.asarray(getattr(g, name), float), np.asarray(getattr(h, name), float)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-4):
            return f"geometry {name} {a.tolist()} != input {b.tolist()}"
    if restored.data.shape != vol.data.shape:
        return f"decoded shape {restored.data.shape} != input {vol.data.shape}"
    p = psnr(vol.data, restored.data)
    if recorded_psnr is None:
        return f"PSNR {p:.3f} dB but none recorded" if math.isfinite(p) else None
    if p == recorded_psnr:      # also a lossless file (inf == inf)
        return None
    if not math.isfinite(p) or abs(p - recorded_psnr) > tol_db:
        return f"PSNR {p:.3f} dB != recorded {recorded_psnr:.3f} dB"
    return None


def _set_threads(threads: int | None) -> None:
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        with contextlib.suppress(Exception):
            import torch

            if torch.get_num_threads() != int(threads):
                torch.set_num_threads(int(threads))


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Encode one input; runs on a Dask worker. ``spec``: a plain dict made by :func:`job_spec`.

    Returns one manifest row. Errors of the input (corrupt file ...) and of the run (out of memory
    after the CPU retry ...) come back as ``status="failed"`` rows; only a dying worker escapes
    (Dask then retries the task elsewhere). ``status="locked"`` means another live process is
    writing this output, ``status="skipped"`` that another run did it after this run made its
    plan (:func:`_done_by_another_run`): no row is recorded for either.
    """
    import inrv

    _set_threads(spec.get("threads"))
    row = new_row(spec, inrv_version=inrv.__version__, started=round(time.time(), 3))
    out = Path(spec["dst"]) / spec["output"]
    lock = None
    try:
        row["input_mtime_ns"] = input_stat(_job_of(spec))[1]      # before hashing: a change during it shows
        row["checksum"], row["input_bytes"] = input_checksum(_job_of(spec))
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(out, spec["token"], spec.get("stale_lock_seconds", DEFAULT_STALE_LOCK_SECONDS))
        if not lock.acquire():
            row["status"] = "locked"
            row["error"] = f"{spec['output']} is being written by another process (lock {lock.path.name})"
            return row
        if _done_by_another_run(spec, out, row["checksum"]):
            row["status"] = "skipped"
            return row
        remove_stale_temps(out)
        _encode_into(spec, out, row, lock)
        row["status"] = "ok"
    except _VerifyError as e:
        row["error_type"], row["error"] = "VerifyError", f"verification failed: {e}"
    except InrvError as e:
        row["error_type"], row["error"] = type(e).__name__, str(e)
    except Exception as e:  # noqa: BLE001 - a fault stays local to its job (out of memory, disk full, ...)
        row["error_type"], row["error"] = type(e).__name__, classify_error(e)[1]
    finally:
        if lock is not None:
            lock.release()
        row["finished"] = round(time.time(), 3)
    if row["status"] != "ok":
        row["error"] = _scrub(row["error"] or "", spec)
    return row


def _encode_into(spec: dict[str, Any], out: Path, row: dict[str, Any], lock: OutputLock) -> None:
    """Compress the input into ``out`` (lock held) and fill the row's measures; with ``verify`` check
    the output, removing it when the check fails (:class:`_VerifyError`)."""
    with (_series_source(spec) if spec["kind"] == "dicom" else contextlib.nullcontext(spec["src"])) as src:
        summary = _compress(spec, src, out, row, lock)
        row["device"] = summary.device or row["device"] or "auto"
        row["output_bytes"] = out.stat().st_size
        row["bpv"] = finite(summary.bpv)
        row["psnr"] = finite(summary.psnr)
        row["ssim"] = finite(summary.ssim)
        row["seconds"] = finite(summary.seconds if summary.seconds is not None else summary.encode_seconds)
        if spec.get("verify"):
            try:
                why = verify_output(src, str(out), row["psnr"], device=row["device"])
            except Exception as e:  # noqa: BLE001 - an output that cannot be decoded fails its check
                why = f"cannot decode the output: {e}"
            if why is not None:
                with contextlib.suppress(OSError):
                    out.unlink()          # never leave an output that failed its check
                row["output_bytes"] = None
                raise _VerifyError(why)
            row["verified"] = True


def _compress(spec: dict[str, Any], src: str, out: Path, row: dict[str, Any], lock: OutputLock):
    """:func:`inrv.compress` on the job's device; an out-of-memory on a GPU gets one retry on the CPU."""
    import inrv
    from ...codec.config import config_from_dict

    device = _pick_device(spec)
    config = config_from_dict(spec["config"])
    kw = {"force": True, "keep_private": bool(spec.get("keep_private")),
          "progress": lambda step, total, info: lock.heartbeat()}
    try:
        summary = inrv.compress(src, out, config, device=device, **kw)
        row["device"] = device
    except Exception as e:  # noqa: BLE001 - an OOM on a GPU gets one retry on the CPU
        if not (is_out_of_memory(e) and device and str(device).startswith("cuda")):
            raise
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()
        row["attempt_note"] = f"{device} out of memory; retried on cpu"
        summary = inrv.compress(src, out, config, device="cpu", **kw)
        row["device"] = "cpu"
    return summary


class _VerifyError(Exception):
    pass


def _scrub(message: str, spec: dict[str, Any]) -> str:
    """Keep absolute paths out of the manifest: SRC/DST prefixes become relative."""
    for base, label in ((spec.get("src_root"), "SRC"), (spec.get("dst"), "DST")):
        if base:
            message = message.replace(str(base).rstrip("/") + "/", f"{label}/").replace(str(base), label)
    return message


def job_spec(job: Job, *, src_root: str, dst: str, config: dict[str, Any], config_hash: str, preset: str | None,
             options: dict[str, Any], keep_private: bool, device: str | None, verify: bool, run_id: str,
             threads: int | None, pin_gpu: bool, stale_lock_seconds: float = DEFAULT_STALE_LOCK_SECONDS,
             planned_at: float | None = None) -> dict[str, Any]:
    """The picklable dict :func:`run_job` receives (``config``: a config as a plain dict)."""
    return {"key": job.key, "kind": job.kind, "src": job.src, "files": list(job.files), "series_uid": job.series_uid,
            "output": job.output, "dst": dst, "src_root": src_root, "config": config, "preset": preset,
            "options": options, "keep_private": keep_private,
            "config_hash": config_hash, "device": device, "verify": verify, "threads": threads,
            "pin_gpu": pin_gpu, "token": f"{run_id}:{job.key}", "stale_lock_seconds": stale_lock_seconds,
            "planned_at": planned_at}


def _job_of(spec: dict[str, Any]) -> Job:
    return Job(key=spec["key"], kind=spec["kind"], src=spec["src"], output=spec["output"],
               files=tuple(spec.get("files") or ()), series_uid=spec.get("series_uid"))


def failed_row(spec: dict[str, Any], error_type: str, error: str) -> dict[str, Any]:
    """The row the driver writes when a task did not return one (its worker died twice ...)."""
    return new_row(spec, error_type=error_type, error=_scrub(error, spec), finished=round(time.time(), 3))
