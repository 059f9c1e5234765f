"""Batch, chapter 7: the Dask driver. :func:`run_batch` submits :func:`~.job.run_job` per input to a Dask
cluster (a LocalCluster, a running scheduler or a given client) and appends one manifest row per finished
job. Only this process writes the manifest; Ctrl-C and SIGTERM stop cleanly (rows already written stay).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...errors import DeviceError
from ..options import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL
from .job import _job_of, failed_row, job_spec, run_job
from .locks import DEFAULT_STALE_LOCK_SECONDS
from .manifest import ManifestWriter, input_checksum, input_stat
from .plan import Planned


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
        return EXIT_PARTIAL if (self.failed or self.skipped_failed or self.locked) else EXIT_OK

    def record(self, key: str, row: dict[str, Any], writer: ManifestWriter) -> None:
        """Count one finished task; write its row unless no row is due (locked, lost, skipped)."""
        if row.get("status") in ("locked", "lost"):
            self.locked += 1
            self.failures.append((key, row.get("error") or row["status"]))
        elif row.get("status") == "skipped":
            self.skipped_done += 1
        else:
            writer.append(row)
            self.rows.append(row)
            if row["status"] == "ok":
                self.ok += 1
            else:
                self.failed += 1
                self.failures.append((key, row.get("error") or "failed"))


def _local_cluster(n_workers: int, gpus: int, threads: int | None):
    """A LocalCluster: one worker process per GPU (``resources={"GPU": 1}``) or ``n_workers`` CPU
    workers, one thread each; no dashboard."""
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


def _gpu_plan(device: str | None, own_client: bool, scheduler: str | None) -> tuple[int, bool]:
    """``(GPU workers of a local cluster, pin each job to its worker's GPU)`` for ``device``."""
    if not own_client or scheduler or device == "cpu":
        return 0, False
    # a local cluster: one worker per visible GPU (device auto/cuda), or one on the GPU named
    n_gpus = _local_gpu_count()
    if device and device.startswith("cuda") and not n_gpus:
        raise DeviceError(f"device {device!r} requested but no CUDA GPU is visible (use --device cpu or auto)")
    if device and device.startswith("cuda:"):
        return 1, False
    return n_gpus, n_gpus > 0


def _row_of_failed_task(spec: dict[str, Any], e: Exception) -> dict[str, Any]:
    """The row for a task that raised instead of returning one (its worker died, the cluster failed)."""
    kind = type(e).__name__
    if kind != "KilledWorker":
        # the cluster, not the input (lost scheduler, cancelled ...): no row, a rerun does it
        return {"status": "lost", "error": f"not run: {kind}: {(str(e).splitlines() or [''])[0]}"}
    # it killed two workers: most likely this input's fault (e.g. host memory)
    row = failed_row(spec, kind, "worker died while encoding (twice)")
    with contextlib.suppress(OSError):
        row["input_mtime_ns"] = input_stat(_job_of(spec))[1]
        row["checksum"], row["input_bytes"] = input_checksum(_job_of(spec))
    return row


class _Submitter:
    """Submits the jobs of a plan to a Dask client, a bounded window at a time (a million inputs are not
    a million futures at once); remembers each future's spec."""

    def __init__(self, client: Any, todo: list[Planned], spec_kw: dict[str, Any], run_id: str,
                 job_fn: Callable[[dict[str, Any]], dict[str, Any]], gpu_resource: bool):
        self.client, self.pending, self.spec_kw, self.run_id = client, iter(todo), spec_kw, run_id
        self.job_fn, self.gpu_resource = job_fn, gpu_resource
        self.specs: dict[str, dict[str, Any]] = {}
        self.futures: list[Any] = []

    def next(self) -> Any:
        p = next(self.pending, None)
        if p is None:
            return None
        spec = job_spec(p.job, run_id=self.run_id, **self.spec_kw)
        key = f"inrv-batch-{self.run_id}-{hashlib.sha1(p.job.key.encode()).hexdigest()[:16]}"
        fut = self.client.submit(self.job_fn, spec, key=key, pure=False, retries=1,
                                 resources={"GPU": 1} if self.gpu_resource else None)
        self.specs[fut.key] = spec
        self.futures.append(fut)
        return fut

    def result(self, fut: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(spec, row)`` of a finished future, which is then released."""
        spec = self.specs.pop(fut.key)
        try:
            return spec, fut.result()
        except Exception as e:  # noqa: BLE001 - the worker died (twice) or the task could not run
            return spec, _row_of_failed_task(spec, e)
        finally:
            fut.release()
            self.futures.remove(fut)


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
    t0 = time.perf_counter() if started is None else started
    stats = _stats_of_plan(plan)
    todo = [p for p in plan if p.action == "encode"]
    if todo:
        own_client = client is None
        gpus, pin_gpu = _gpu_plan(device, own_client, scheduler)
        Path(dst).mkdir(parents=True, exist_ok=True)
        if own_client and not scheduler and threads is None:
            threads = max(1, (os.cpu_count() or 1) // max(1, gpus or workers or 1))
        spec_kw = dict(src_root=src_root, dst=dst, config=config, config_hash=config_hash, preset=preset,
                       options=options or {}, keep_private=keep_private, device=device, verify=verify,
                       threads=threads, pin_gpu=pin_gpu, stale_lock_seconds=stale_lock_seconds,
                       planned_at=time.time() if planned_at is None else planned_at)
        with ManifestWriter(Path(dst) / manifest) as writer, _sigterm_as_interrupt():
            _drive(todo, stats, writer, spec_kw, client=client, scheduler=scheduler, workers=workers, gpus=gpus,
                   device=device, progress=progress, on_row=on_row, job_fn=job_fn or run_job, window=window)
    stats.seconds = time.perf_counter() - t0
    return stats


def _stats_of_plan(plan: list[Planned]) -> BatchStats:
    stats = BatchStats(discovered=len(plan))
    stats.skipped_done = sum(p.action == "done" for p in plan)
    failed_before = [p for p in plan if p.action == "failed"]
    stats.skipped_failed = len(failed_before)
    stats.failures.extend((p.job.key, f"(earlier run) {p.reason}") for p in failed_before)
    return stats


def _drive(todo: list[Planned], stats: BatchStats, writer: ManifestWriter, spec_kw: dict[str, Any], *,
           client: Any, scheduler: str | None, workers: int | None, gpus: int, device: str | None,
           progress: bool | None, on_row: Callable | None, job_fn: Callable, window: int | None) -> None:
    """Open the cluster (unless ``client`` is given), keep a window of tasks submitted, record each
    result as it completes, and close what it opened, also on Ctrl-C."""
    from distributed import Client, as_completed
    from tqdm import tqdm

    own_client, cluster, sub, bar = client is None, None, None, None
    try:
        if own_client:
            if scheduler:
                client = Client(scheduler, timeout="30s")
            else:
                cluster = _local_cluster(workers or max(1, (os.cpu_count() or 2) // 2), gpus, spec_kw["threads"])
                client = Client(cluster)
        gpu_resource = bool(gpus) or (own_client and scheduler is not None and device != "cpu"
                                      and _cluster_has_gpu_resource(client))
        sub = _Submitter(client, todo, spec_kw, uuid.uuid4().hex[:12], job_fn, gpu_resource)
        # the scheduler still sees several tasks per worker thread, so no worker waits for the driver
        for _ in range(window or max(32, 4 * _total_threads(client))):
            if sub.next() is None:
                break
        completed = as_completed(list(sub.futures))
        bar = tqdm(total=len(todo), file=sys.stderr, unit="vol", dynamic_ncols=True, leave=True,
                   disable=(None if progress is None else not progress), desc="inrv batch")
        for fut in completed:
            nxt = sub.next()
            if nxt is not None:
                completed.add(nxt)
            spec, row = sub.result(fut)
            stats.record(spec["key"], row, writer)
            if on_row is not None:
                on_row(row)
            bar.update(1)
            bar.set_postfix(ok=stats.ok, failed=stats.failed, refresh=False)
    except KeyboardInterrupt:
        stats.interrupted = True
        with contextlib.suppress(Exception):
            if sub is not None and sub.futures and client is not None:
                client.cancel(sub.futures)
    finally:
        if bar is not None:
            bar.close()
        if own_client:
            for closable in (client, cluster):
                with contextlib.suppress(Exception):
                    if closable is not None:
                        closable.close(timeout=10)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (scancel, kill) behaves like Ctrl-C while the batch runs: stop cleanly."""
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        if old is not None:
            with contextlib.suppress(Exception):
                signal.signal(signal.SIGTERM, old)


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
