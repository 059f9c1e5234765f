"""The engine behind ``inrv batch``: discovery, manifest, locks, the job function and the Dask driver.

One batch run, in order::

    jobs = discover(src, include=..., exclude=...)        # sorted Job list: files + DICOM series
    jobs = shard(jobs, i, n)                              # optional: a fixed share for job arrays
    plan = make_plan(jobs, dst, config_hash, ...)         # encode / skip (done) / skip (failed earlier)
    stats = run_batch(plan, ...)                          # Dask: submit run_job per input, write rows

* The job function :func:`run_job` runs on a Dask worker. It takes a plain dict (picklable), claims
  the output with an ``O_EXCL`` lock file, calls the public :func:`inrv.compress` and returns a plain
  dict: one manifest row. It never raises for a bad input: a failure is a row with ``status="failed"``.
* Only the driver (the process running ``inrv batch``) writes the manifest, from ``as_completed``
  results: one writer, rows appended with one ``write`` + ``fsync`` each, so a crash loses nothing
  already recorded and a torn last line is skipped when read.
* Nothing here imports torch at module level: the driver stays light; workers import it when they
  encode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import InrvError, UsageError

# file suffixes that are one volume each; everything else may be part of a DICOM series
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
MANIFEST_GLOB = "manifest*.jsonl"
SCHEMA = "inrv-batch/1"
EXIT_OK = 0
EXIT_SOME_FAILED = 8
EXIT_INTERRUPTED = 130
DEFAULT_STALE_LOCK_SECONDS = 3600.0   # a lock whose heartbeat is older than this is stale
HEARTBEAT_SECONDS = 30.0
VERIFY_PSNR_TOL_DB = 0.05


# --------------------------------------------------------------------------------------------- discovery

@dataclass(frozen=True)
class Job:
    """One input of a batch.

    ``key`` is the input's path relative to SRC (posix); for a DICOM series it is
    ``rel/dir/<SeriesInstanceUID>`` so two series of one folder are two keys. ``files`` is the sorted
    list of the series' files (absolute), empty for a single file. ``output`` is relative to DST.
    """

    key: str
    kind: str                     # "file" or "dicom"
    src: str                      # absolute path: the file, or the series' folder
    output: str                   # relative posix path under DST
    files: tuple[str, ...] = ()
    series_uid: str | None = None


def _volume_suffix(name: str) -> str | None:
    low = name.lower()
    for suf in VOLUME_SUFFIXES:
        if low.endswith(suf):
            return suf
    return None


def _looks_like_dicom(path: Path) -> bool:
    """A file with the DICM preamble, or a ``.dcm``/``.ima`` suffix."""
    if path.suffix.lower() in (".dcm", ".ima", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _matches(rel: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """fnmatch on the relative posix path (``*`` also crosses ``/``) or on the base name."""
    include, exclude = list(include), list(exclude)
    name = rel.rsplit("/", 1)[-1]

    def hit(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    if include and not hit(include):
        return False
    return not hit(exclude)


def _dicom_series(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``[(series_uid, sorted files)]`` of a folder, grouped by SeriesInstanceUID (GDCM)."""
    import SimpleITK as sitk

    out = []
    reader = sitk.ImageSeriesReader
    for uid in sorted(reader.GetGDCMSeriesIDs(str(folder)) or ()):
        files = tuple(sorted(reader.GetGDCMSeriesFileNames(str(folder), uid)))
        if files:
            out.append((uid, files))
    return out


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def discover(src: str | os.PathLike, *, include: Iterable[str] = (), exclude: Iterable[str] = (),
             dst: str | os.PathLike | None = None) -> list[Job]:
    """Walk ``src`` recursively and return the sorted jobs.

    Every NIfTI/NRRD/MHA file is one job (``a/scan.nii.gz -> a/scan.inrv``); every DICOM series is
    one job (``a/dir -> a/dir/<SeriesInstanceUID>.inrv``), grouped by SeriesInstanceUID, not by
    folder. Hidden files and folders and ``dst`` (when it lies inside ``src``) are skipped.
    ``include``/``exclude`` are glob patterns matched against the relative path (for a series: the
    folder's relative path) or the base name; exclude wins.
    """
    root = Path(src).resolve()
    if not root.is_dir():
        raise UsageError(f"batch source {src} is not a folder")
    skip_dir = Path(dst).resolve() if dst is not None else None
    jobs: list[Job] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and (skip_dir is None or (here / d).resolve() != skip_dir))
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        dicom_candidate = False
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            rel = f"{rel_dir}/{name}" if rel_dir else name
            suf = _volume_suffix(name)
            if suf is not None:
                if _matches(rel, include, exclude):
                    out = rel[: len(rel) - len(suf)] + ".inrv"
                    jobs.append(Job(key=rel, kind="file", src=str(path), output=out))
            elif not dicom_candidate and path.is_file() and _looks_like_dicom(path):
                dicom_candidate = True
        if dicom_candidate and _matches(rel_dir or ".", include, exclude):
            for uid, files in _dicom_series(here):
                stem = _SAFE.sub("_", uid)
                key = f"{rel_dir}/{stem}" if rel_dir else stem
                jobs.append(Job(key=key, kind="dicom", src=str(here), output=key + ".inrv",
                                files=files, series_uid=uid))
    jobs = _dedupe_outputs(jobs)
    return sorted(jobs, key=lambda j: j.key)


def _dedupe_outputs(jobs: list[Job]) -> list[Job]:
    """``scan.nii`` and ``scan.nii.gz`` side by side would both map to ``scan.inrv``: give each
    colliding input its full name plus ``.inrv`` instead (deterministic)."""
    by_out: dict[str, list[Job]] = {}
    for j in jobs:
        by_out.setdefault(j.output, []).append(j)
    fixed = []
    for out, group in by_out.items():
        if len(group) == 1:
            fixed.extend(group)
        else:
            fixed.extend(dataclasses.replace(j, output=j.key + ".inrv") for j in group)
    return fixed


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N, zero-based) -> ``(I, N)``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"bad --shard {text!r}: use I/N with 0 <= I < N, e.g. 0/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad --shard {text!r}: need 0 <= I < N (zero-based; Slurm: --array=0-{max(n - 1, 0)})")
    return i, n


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The fixed share of shard ``index`` of ``count``: every ``count``-th job of the sorted list,
    starting at ``index``. Depends only on the sorted inputs, so shards never overlap."""
    ordered = sorted(jobs, key=lambda j: j.key)
    return [j for n, j in enumerate(ordered) if n % count == index]


def manifest_name(shard_spec: tuple[int, int] | None) -> str:
    if shard_spec is None:
        return "manifest.jsonl"
    return f"manifest.shard-{shard_spec[0]}-of-{shard_spec[1]}.jsonl"


# --------------------------------------------------------------------------------------------- checksums

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
    from ..codec.config import config_to_dict, make_config

    cfg = config_to_dict(make_config(config, **(overrides or {})))
    text = json.dumps({"config": cfg, "keep_private": bool(keep_private)}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16], cfg


# --------------------------------------------------------------------------------------------- manifest

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
        data = (json.dumps(row, sort_keys=False, default=_json_default, allow_nan=False) + "\n").encode()
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


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def _finite(x: Any) -> float | None:
    """JSON has no inf/nan: lossless PSNR (inf) and undefined SSIM (nan) are written as null."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------- planning

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
    from .. import info

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


# --------------------------------------------------------------------------------------------- locks

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class OutputLock:
    """An ``O_EXCL`` lock file ``<output>.lock`` held while one job writes ``<output>``.

    The file holds ``{"pid", "host", "token", "started"}``; its mtime is a heartbeat (refreshed
    during training). A lock is stale when its process is dead (same host), when its heartbeat is
    older than ``stale_seconds``, or when it carries the same ``token`` (a previous attempt of this
    very task whose worker died); a stale lock is taken over.
    """

    def __init__(self, output: Path, token: str, stale_seconds: float = DEFAULT_STALE_LOCK_SECONDS):
        self.path = Path(str(output) + ".lock")
        self.token = token
        self.stale_seconds = stale_seconds
        self.held = False
        self._last_beat = 0.0

    def _stale(self) -> bool:
        try:
            st = self.path.stat()
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            data = {}
            try:
                st = self.path.stat()
            except OSError:
                return True
        if time.time() - st.st_mtime > self.stale_seconds:
            return True
        if data.get("token") == self.token:
            return True
        if data.get("host") == socket.gethostname() and isinstance(data.get("pid"), int):
            return not _pid_alive(data["pid"])
        # unreadable (being written right now) or another host: trust the heartbeat only
        return False

    def acquire(self) -> bool:
        """True when the lock is ours; False when a live process holds it."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._stale():
                    return False
                # move the stale lock aside (one taker wins the rename), then retry the O_EXCL create
                aside = Path(f"{self.path}.stale-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(OSError):
                    os.rename(self.path, aside)
                    aside.unlink()
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token, "started": time.time()}
            os.write(fd, json.dumps(info).encode())
            os.close(fd)
            self.held = True
            self._last_beat = time.time()
            return True
        return False

    def heartbeat(self) -> None:
        now = time.time()
        if self.held and now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.held = False


def remove_stale_temps(output: Path) -> int:
    """Remove temporary files a killed writer left next to ``output`` (``atomic_output`` names them
    ``.<name>.<random>.tmp...``). Call only while holding the output's lock."""
    n = 0
    for p in output.parent.glob(f".{output.name}.*.tmp*"):
        with contextlib.suppress(OSError):
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
    return n


# --------------------------------------------------------------------------------------------- the job

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


def _is_oom(e: BaseException) -> bool:
    name = type(e).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(e).lower()


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


def _summary_metric(summary: dict[str, Any], *names: str) -> Any:
    """Find a metric in ``inrv.compress``'s summary, at top level or under ``stats``/``quality``."""
    for where in (summary, summary.get("metrics") or {}, summary.get("stats") or {}):
        if isinstance(where, dict):
            for n in names:
                if n in where and where[n] is not None:
                    return where[n]
    return None


def verify_output(src: str, out: str, recorded_psnr: float | None, tol_db: float = VERIFY_PSNR_TOL_DB,
                  device: str | None = "cpu") -> str | None:
    """Decode ``out`` (as ``inrv.decompress`` does, without writing a file) and compare it with the
    input ``src``: shape, geometry, PSNR equal to the recorded one within ``tol_db``.
    Returns None when it matches, else why not."""
    import numpy as np

    import inrv
    from ..codec.metrics import psnr
    from ..formats.io import restore_dtype

    vol = inrv.load(src)
    f = inrv.read(out)
    if tuple(f.shape) != tuple(vol.shape):
        return f"shape {tuple(f.shape)} != input {tuple(vol.shape)}"
    g, h = f.geometry, vol.geometry
    for name in ("spacing", "origin", "direction"):
        a, b = np.asarray(getattr(g, name), float), np.asarray(getattr(h, name), float)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-4):
            return f"geometry {name} {a.tolist()} != input {b.tolist()}"
    if device in (None, "auto"):
        device = "cpu"
    restored = restore_dtype(inrv.decode(f.encoded, device=device), f.intensity)
    if restored.shape != vol.data.shape:
        return f"decoded shape {restored.shape} != input {vol.data.shape}"
    p = psnr(vol.data, restored)
    if recorded_psnr is None:
        if math.isfinite(p):
            return f"PSNR {p:.3f} dB but none recorded"
        return None
    if not math.isfinite(p) or abs(p - recorded_psnr) > tol_db:
        return f"PSNR {p:.3f} dB != recorded {recorded_psnr:.3f} dB"
    return None


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Encode one input; runs on a Dask worker. ``spec``: a plain dict made by :func:`job_spec`.

    Returns one manifest row. Errors of the input (corrupt file ...) and of the run (out of memory
    after the CPU retry ...) come back as ``status="failed"`` rows; only a dying worker escapes
    (Dask then retries the task elsewhere). ``status="locked"`` means another live process is
    writing this output, ``status="skipped"`` that another run did it after this run made its
    plan (:func:`_done_by_another_run`): no row is recorded for either.
    """
    import inrv
    from ..codec.config import config_from_dict

    t_start = time.time()
    threads = spec.get("threads")
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        with contextlib.suppress(Exception):
            import torch

            if torch.get_num_threads() != int(threads):
                torch.set_num_threads(int(threads))
    row: dict[str, Any] = {
        "schema": SCHEMA, "input": spec["key"], "kind": spec["kind"], "series_uid": spec.get("series_uid"),
        "checksum": None, "input_bytes": None, "input_mtime_ns": None, "output": spec["output"],
        "output_bytes": None, "bpv": None, "psnr": None, "ssim": None, "seconds": None, "device": None,
        "status": "failed",
        "error_type": None, "error": None, "verified": None, "preset": spec.get("preset"),
        "options": spec.get("options") or {}, "config_hash": spec["config_hash"],
        "inrv_version": inrv.__version__, "attempt_note": None, "started": round(t_start, 3), "finished": None,
    }
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

        def progress(step: int, total: int, info: dict) -> None:
            lock.heartbeat()

        device = _pick_device(spec)
        config = config_from_dict(spec["config"])
        kw = {"force": True, "keep_private": bool(spec.get("keep_private")), "progress": progress}
        with (_series_source(spec) if spec["kind"] == "dicom" else contextlib.nullcontext(spec["src"])) as src:
            try:
                summary = inrv.compress(src, out, config, device=device, **kw)
                row["device"] = device
            except Exception as e:  # noqa: BLE001 - an OOM on a GPU gets one retry on the CPU
                if not (_is_oom(e) and device and str(device).startswith("cuda")):
                    raise
                with contextlib.suppress(Exception):
                    import torch

                    torch.cuda.empty_cache()
                row["attempt_note"] = f"{device} out of memory; retried on cpu"
                summary = inrv.compress(src, out, config, device="cpu", **kw)
                row["device"] = "cpu"
            row["device"] = _summary_metric(summary, "device") or row["device"] or "auto"
            row["output_bytes"] = out.stat().st_size
            row["bpv"] = _finite(_summary_metric(summary, "bpv", "bits_per_voxel"))
            row["psnr"] = _finite(_summary_metric(summary, "psnr", "psnr_db"))
            row["ssim"] = _finite(_summary_metric(summary, "ssim"))
            row["seconds"] = _finite(_summary_metric(summary, "seconds", "encode_seconds"))
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
        row["status"] = "ok"
    except _VerifyError as e:
        row["error_type"], row["error"] = "VerifyError", f"verification failed: {e}"
    except InrvError as e:
        row["error_type"], row["error"] = type(e).__name__, str(e)
    except Exception as e:  # noqa: BLE001 - a fault stays local to its job (out of memory, disk full, ...)
        from .options import classify_error

        row["error_type"], row["error"] = type(e).__name__, classify_error(e)[1]
    finally:
        if lock is not None:
            lock.release()
        row["finished"] = round(time.time(), 3)
    if row["status"] != "ok":
        row["error"] = _scrub(row["error"] or "", spec)
    return row


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
    now = round(time.time(), 3)
    return {"schema": SCHEMA, "input": spec["key"], "kind": spec["kind"], "series_uid": spec.get("series_uid"),
            "checksum": None, "input_bytes": None, "input_mtime_ns": None, "output": spec["output"],
            "output_bytes": None, "bpv": None,
            "psnr": None, "ssim": None, "seconds": None, "device": None, "status": "failed",
            "error_type": error_type, "error": _scrub(error, spec), "verified": None, "preset": spec.get("preset"),
            "options": spec.get("options") or {}, "config_hash": spec["config_hash"], "inrv_version": None,
            "attempt_note": None, "started": None, "finished": now}


# --------------------------------------------------------------------------------------------- the driver

@dataclass
class BatchStats:
    discovered: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    ok: int = 0
    failed: int = 0
    locked: int = 0               # not done and not recorded: busy in another run, or the cluster failed
    interrupted: bool = False
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if (self.failed or self.skipped_failed or self.locked) else EXIT_OK


def _local_cluster(n_workers: int, gpus: int, threads: int | None):
    """A LocalCluster: one worker process per GPU (``resources={"GPU": 1}``) or ``n_workers`` CPU
    workers, one thread each; no dashboard."""
    import logging

    import dask
    from distributed import LocalCluster

    env = {"OMP_NUM_THREADS": str(threads or 1), "MKL_NUM_THREADS": str(threads or 1)}
    kw: dict[str, Any] = {}
    if gpus:
        n_workers = gpus
        kw["resources"] = {"GPU": 1}
    # a volume that kills its worker (host out of memory) should fail after two tries, not kill four
    # workers; and a worker holds exactly one task at a time (saturation 1.0), so that a dying worker
    # does not take a queued, innocent task down with it
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}), warnings.catch_warnings():
        # with the dashboard off the scheduler still opens its small HTTP server (health checks) on 8787,
        # or on a random port when another cluster holds 8787: not worth a warning
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            silence_logs=logging.ERROR, env=env, **kw)


def run_batch(plan: list[Planned], *, src_root: str, dst: str, manifest: str, config: dict[str, Any],
              config_hash: str, preset: str | None = None, options: dict[str, Any] | None = None,
              keep_private: bool = False, device: str | None = None, verify: bool = False,
              workers: int | None = None, threads: int | None = None, scheduler: str | None = None,
              client: Any = None, progress: bool | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None,
              stale_lock_seconds: float = DEFAULT_STALE_LOCK_SECONDS,
              job_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
              window: int | None = None, started: float | None = None,
              planned_at: float | None = None) -> BatchStats:
    """Run the ``encode`` entries of ``plan`` on Dask and append one manifest row per finished job.

    ``client``: an existing ``distributed.Client`` (tests); else ``scheduler`` (an address) or a new
    LocalCluster. Ctrl-C cancels the futures, closes the cluster and returns with
    ``interrupted=True``; rows already written stay. At most ``window`` tasks are submitted at a time
    (default: 4 per worker thread, at least 32). ``job_fn`` replaces :func:`run_job` (tests).
    ``started``: ``time.perf_counter()`` when the command started (for the wall time in the summary).
    ``planned_at``: ``time.time()`` before the plan was made; an output modified after it and recorded
    ok in a manifest was done by an overlapping run, and is not done again (default: now).
    """
    from tqdm import tqdm

    t0 = time.perf_counter() if started is None else started
    stats = BatchStats(discovered=len(plan))
    stats.skipped_done = sum(p.action == "done" for p in plan)
    failed_before = [p for p in plan if p.action == "failed"]
    stats.skipped_failed = len(failed_before)
    stats.failures.extend((p.job.key, f"(earlier run) {p.reason}") for p in failed_before)
    todo = [p for p in plan if p.action == "encode"]
    if not todo:
        stats.seconds = time.perf_counter() - t0
        return stats

    own_client = client is None
    gpus, pin_gpu = 0, False
    if own_client and not scheduler and device != "cpu":
        # a local cluster: one worker per visible GPU (device auto/cuda), or one on the GPU named
        n_gpus = _local_gpu_count()
        if device and device.startswith("cuda") and not n_gpus:
            from ..errors import DeviceError

            raise DeviceError(f"device {device!r} requested but no CUDA GPU is visible (use --device cpu or auto)")
        if device and device.startswith("cuda:"):
            gpus = 1
        else:
            gpus, pin_gpu = n_gpus, n_gpus > 0
    Path(dst).mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    if planned_at is None:
        planned_at = time.time()
    cluster = None
    bar = None
    futures: list[Any] = []
    writer = ManifestWriter(Path(dst) / manifest)
    old_sigterm = None
    try:
        # SIGTERM (scancel, kill) behaves like Ctrl-C: stop cleanly
        if threading_is_main():
            old_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        from distributed import Client, as_completed

        if own_client:
            if scheduler:
                client = Client(scheduler, timeout="30s")
            else:
                if threads is None:
                    threads = max(1, (os.cpu_count() or 1) // max(1, gpus or workers or 1))
                cluster = _local_cluster(workers or max(1, (os.cpu_count() or 2) // 2), gpus, threads)
                client = Client(cluster)
        use_gpu_resource = bool(gpus) or (own_client and scheduler is not None and device != "cpu"
                                          and _cluster_has_gpu_resource(client))
        specs: dict[str, dict[str, Any]] = {}
        pending = iter(todo)

        def submit_next() -> Any:
            p = next(pending, None)
            if p is None:
                return None
            spec = job_spec(p.job, src_root=src_root, dst=dst, config=config, config_hash=config_hash,
                            preset=preset, options=options or {}, keep_private=keep_private, device=device,
                            verify=verify, run_id=run_id, threads=threads, pin_gpu=pin_gpu,
                            stale_lock_seconds=stale_lock_seconds, planned_at=planned_at)
            key = f"inrv-batch-{run_id}-{hashlib.sha1(p.job.key.encode()).hexdigest()[:16]}"
            fut = client.submit(job_fn or run_job, spec, key=key, pure=False, retries=1,
                                resources={"GPU": 1} if use_gpu_resource else None)
            specs[fut.key] = spec
            futures.append(fut)
            return fut

        # a bounded window of submitted tasks (a million inputs are not a million futures at once);
        # the scheduler still sees several tasks per worker thread, so no worker waits for the driver
        window = window or max(32, 4 * _total_threads(client))
        for _ in range(window):
            if submit_next() is None:
                break
        completed = as_completed(list(futures))

        bar = tqdm(total=len(todo), file=sys.stderr, unit="vol", dynamic_ncols=True, leave=True,
                   disable=(None if progress is None else not progress), desc="inrv batch")
        for fut in completed:
            spec = specs.pop(fut.key)
            nxt = submit_next()
            if nxt is not None:
                completed.add(nxt)
            try:
                row = fut.result()
            except Exception as e:  # noqa: BLE001 - the worker died (twice) or the task could not run
                kind = type(e).__name__
                if kind == "KilledWorker":
                    # it killed two workers: most likely this input's fault (e.g. host memory)
                    row = failed_row(spec, kind, "worker died while encoding (twice)")
                    with contextlib.suppress(OSError):
                        row["input_mtime_ns"] = input_stat(_job_of(spec))[1]
                        row["checksum"], row["input_bytes"] = input_checksum(_job_of(spec))
                else:
                    # the cluster, not the input (lost scheduler, cancelled ...): no row, a rerun does it
                    row = {"status": "lost", "error": f"not run: {kind}: {(str(e).splitlines() or [''])[0]}"}
            finally:
                fut.release()
                futures.remove(fut)
            if row.get("status") in ("locked", "lost"):
                stats.locked += 1
                stats.failures.append((spec["key"], row.get("error") or row["status"]))
            elif row.get("status") == "skipped":
                stats.skipped_done += 1
            else:
                writer.append(row)
                stats.rows.append(row)
                if row["status"] == "ok":
                    stats.ok += 1
                else:
                    stats.failed += 1
                    stats.failures.append((spec["key"], row.get("error") or "failed"))
            if on_row is not None:
                on_row(row)
            bar.update(1)
            bar.set_postfix(ok=stats.ok, failed=stats.failed, refresh=False)
    except KeyboardInterrupt:
        stats.interrupted = True
        with contextlib.suppress(Exception):
            if futures and client is not None:
                client.cancel(futures)
    finally:
        if old_sigterm is not None:
            with contextlib.suppress(Exception):
                signal.signal(signal.SIGTERM, old_sigterm)
        if bar is not None:
            bar.close()
        writer.close()
        if own_client:
            with contextlib.suppress(Exception):
                if client is not None:
                    client.close(timeout=10)
            with contextlib.suppress(Exception):
                if cluster is not None:
                    cluster.close(timeout=10)
    stats.seconds = time.perf_counter() - t0
    return stats


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _total_threads(client: Any) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001
        return 1


def _local_gpu_count() -> int:
    """CUDA devices torch sees here; 0 without importing torch when the machine has no NVIDIA driver."""
    if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia").exists():
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def _cluster_has_gpu_resource(client: Any) -> bool:
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001
        return False
    return any((w.get("resources") or {}).get("GPU") for w in workers.values())


# --------------------------------------------------------------------------------------------- reporting

def summary_table(stats: BatchStats) -> str:
    """The table printed on stderr at the end of a run."""
    oks = [r for r in stats.rows if r.get("status") == "ok"]

    def mean(key: str) -> str:
        vals = [r[key] for r in oks if isinstance(r.get(key), (int, float))]
        return f"{sum(vals) / len(vals):.3f}" if vals else "-"

    lines = [
        "inrv batch summary",
        f"  inputs            {stats.discovered}",
        f"  encoded ok        {stats.ok}",
        f"  failed            {stats.failed}",
        f"  skipped (done)    {stats.skipped_done}",
        f"  skipped (failed earlier; --retry-failed to retry)  {stats.skipped_failed}" if stats.skipped_failed
        else None,
        f"  not done (busy in another run, or the cluster failed; rerun)  {stats.locked}" if stats.locked
        else None,
        f"  mean bpv / PSNR dB / SSIM of this run  {mean('bpv')} / {mean('psnr')} / {mean('ssim')}" if oks else None,
        f"  wall time         {stats.seconds:.1f} s",
        "  interrupted: rerun the same command to continue" if stats.interrupted else None,
    ]
    out = [ln for ln in lines if ln is not None]
    if stats.failures:
        out.append("  failures:")
        for key, err in stats.failures[:20]:
            out.append(f"    {key}: {err}")
        if len(stats.failures) > 20:
            out.append(f"    ... and {len(stats.failures) - 20} more (see the manifest)")
    return "\n".join(out)
