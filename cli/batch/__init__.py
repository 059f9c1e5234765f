"""``inrv batch``: compress a whole archive, resumable, on Dask distributed (``docs/batch.md``).

One batch run, in order, one module per chapter::

    jobs = discover(src, include=..., exclude=...)        # discovery.py: sorted Jobs, files + DICOM series
    jobs = shard(jobs, i, n)                              # discovery.py: a fixed share for job arrays
    plan = make_plan(jobs, dst, config_hash, ...)         # plan.py: encode / skip (done) / skip (failed)
    stats = run_batch(plan, ...)                          # driver.py: Dask, one run_job (job.py) per input
    print(summary_table(stats))                           # report.py

``manifest.py`` holds the checksums and the append-only ``manifest*.jsonl`` (only the driver writes it),
``locks.py`` the per-output lock files, ``command.py`` the click command. Nothing here imports torch at
module level: the driver stays light; workers import it when they encode.
"""

from __future__ import annotations

from ..options import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL
from .command import batch
from .discovery import Job, discover, parse_shard, shard
from .driver import BatchStats, _local_cluster, run_batch
from .job import failed_row, job_spec, run_job, verify_output
from .locks import DEFAULT_STALE_LOCK_SECONDS, OutputLock, remove_stale_temps
from .manifest import (SCHEMA, ManifestWriter, config_identity, input_checksum, input_stat, manifest_name,
                       read_manifests)
from .plan import Planned, make_plan, output_ok
from .report import summary_table

__all__ = ["batch", "Job", "discover", "parse_shard", "shard", "BatchStats", "run_batch", "run_job", "job_spec",
           "failed_row", "verify_output", "OutputLock", "remove_stale_temps", "DEFAULT_STALE_LOCK_SECONDS",
           "SCHEMA", "ManifestWriter", "config_identity", "input_checksum", "input_stat", "manifest_name",
           "read_manifests", "Planned", "make_plan", "output_ok", "summary_table", "EXIT_OK", "EXIT_PARTIAL",
           "EXIT_INTERRUPTED", "_local_cluster"]
