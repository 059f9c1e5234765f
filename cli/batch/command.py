"""``inrv batch SRC -o DST``: compress a whole archive, resumable, on Dask distributed.

The click layer only: options -> the chapters of :mod:`inrv.cli.batch` (discovery, plan, the Dask
driver, the report). See ``docs/batch.md``. Without the ``inrv`` entry point: ``python -m inrv batch``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ...errors import InrvError, UsageError
from ..options import (EXIT_OK, build_config, config_overrides, encoding_options, progress_enabled,
                       progress_option, report_error, resolve_preset, verbosity, verbosity_options)
from .discovery import discover, parse_shard, shard
from .driver import run_batch
from .locks import DEFAULT_STALE_LOCK_SECONDS
from .manifest import config_identity, manifest_name
from .plan import make_plan
from .report import summary_table


@click.command("batch")
@click.argument("src", type=click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path))
@click.option("-o", "--output", "dst", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; mirrors SRC's tree (created when missing).")
@encoding_options
@click.option("--include", multiple=True, metavar="GLOB",
              help="Only inputs whose relative path or name matches GLOB (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip inputs whose relative path or name matches GLOB (repeatable; wins over --include).")
@click.option("--dry-run", is_flag=True, help="List what would be encoded or skipped; write nothing.")
@click.option("--retry-failed", is_flag=True, help="Encode again the inputs that failed in an earlier run.")
@click.option("-f", "--force", is_flag=True,
              help="Encode every input again, even those already done (their outputs are replaced).")
@click.option("--rehash", is_flag=True,
              help="Recompute the checksum of every input with a manifest row, even when its size and "
                   "modification time are unchanged.")
@click.option("--verify", is_flag=True,
              help="Decode each new output and check shape, geometry and PSNR against the input before "
                   "recording it as done.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="CPU worker processes of the local cluster (default: half the cores). "
                   "With CUDA: one worker per GPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per job (default on a local cluster: cores / workers).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Submit to a running Dask scheduler (e.g. tcp://host:8786) instead of a local cluster.")
@click.option("--shard", metavar="I/N", default=None,
              help="Take only shard I of N (zero-based) of the sorted inputs, for job arrays; "
                   "the manifest is DST/manifest.shard-I-of-N.jsonl.")
@click.option("--lock-timeout", type=click.FloatRange(min=1), default=DEFAULT_STALE_LOCK_SECONDS,
              show_default=True, metavar="SECONDS",
              help="Another run's lock on an output is stale after this long without a heartbeat.")
@progress_option
@verbosity_options
def batch(src: Path, dst: Path, include: tuple[str, ...], exclude: tuple[str, ...], dry_run: bool,
          retry_failed: bool, force: bool, rehash: bool, verify: bool, workers: int | None, threads: int | None,
          scheduler: str | None, shard: str | None, lock_timeout: float, progress: bool | None,
          **enc: Any) -> None:
    """Compress every volume under SRC into DST, resumably, on Dask.

    Each NIfTI/NRRD/MHA file and each DICOM series (grouped by SeriesInstanceUID) is one job; DST
    mirrors SRC (a/scan.nii.gz -> DST/a/scan.inrv; a series in a/dir -> DST/a/dir/<SeriesUID>.inrv).
    DST/manifest*.jsonl records every finished job; rerunning the same command skips what is done.

    Exit codes: 0 every input done, 8 some failed (see the summary and the manifest), 2 bad usage,
    130 interrupted (rerun to continue).
    """
    ctx = click.get_current_context()
    started = time.perf_counter()
    try:
        code = _run(ctx, src, dst, include, exclude, dry_run, retry_failed, force, rehash, verify, workers, threads,
                    scheduler, shard, lock_timeout, progress, enc, started)
    except InrvError as e:
        code = report_error(e, verbosity(ctx))
    ctx.exit(code)


def _run(ctx, src: Path, dst: Path, include, exclude, dry_run, retry_failed, force, rehash, verify, workers, threads,
         scheduler, shard_text, lock_timeout, progress, enc, started) -> int:
    enc = dict(enc)
    device = enc.pop("device", None)
    keep_private = bool(enc.get("keep_private"))
    config = build_config(**enc)
    preset = resolve_preset(enc.get("preset"), enc.get("model"))
    config_hash, config_dict = config_identity(config, keep_private=keep_private)
    if isinstance(device, str) and device.strip().lower() == "auto":
        device = None
    shard_spec = parse_shard(shard_text)
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if dst_abs == src_abs:
        raise UsageError("the output folder must differ from SRC (inputs are never modified)")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"{dst} exists and is not a folder")
    jobs = discover(src_abs, include=include, exclude=exclude, dst=dst_abs)
    jobs, bids_copies = _bids_others(src_abs, dst_abs, jobs, shard_spec, dry_run)   # BIDS: keep the other files
    if shard_spec is not None:
        jobs = shard(jobs, *shard_spec)
    planned_at = time.time()
    plan = make_plan(jobs, dst_abs, config_hash, retry_failed=retry_failed, force=force, rehash=rehash)

    if dry_run:
        labels = {"encode": "encode", "done": "skip (done)", "failed": "skip (failed earlier)"}
        for p in plan:
            why = f"  [{p.reason}]" if p.reason and p.action != "done" else ""
            click.echo(f"{labels[p.action]:<22} {p.job.key} -> {p.job.output}{why}")
        for rel in bids_copies:
            click.echo(f"{'copy (BIDS)':<22} {rel}")
        n = {a: sum(p.action == a for p in plan) for a in labels}
        click.echo(f"{len(plan)} inputs: {n['encode']} to encode, {n['done']} done, "
                   f"{n['failed']} failed earlier (dry run: nothing written)", err=True)
        return EXIT_OK
    if bids_copies:
        click.echo(f"inrv batch: BIDS dataset: {len(bids_copies)} other files copied as they are", err=True)

    if not plan:
        click.echo(f"inrv batch: no inputs found under {src}", err=True)
    stats = run_batch(plan, src_root=str(src_abs), dst=str(dst_abs), manifest=manifest_name(shard_spec),
                             config=config_dict, config_hash=config_hash, preset=preset,
                             options=config_overrides(**enc), keep_private=keep_private, device=device,
                             verify=verify, workers=workers, threads=threads, scheduler=scheduler,
                             progress=progress_enabled(progress, ctx), stale_lock_seconds=lock_timeout,
                             started=started, planned_at=planned_at)
    if verbosity(ctx) >= 0 or stats.exit_code:
        click.echo(summary_table(stats), err=True)
    return stats.exit_code



def _bids_others(src: Path, dst: Path, jobs, shard_spec, dry_run: bool):
    """In a BIDS dataset, every file that is not an input image (sidecars, bval/bvec, tables, README, images left
    out by --exclude, 4D images, which inrv does not encode) is copied to DST byte for byte (formats/bids.py; by
    shard 0 only). Returns the jobs left to encode and what was copied."""
    from ...formats.bids import copy_others, encodable, is_bids_dataset

    if not is_bids_dataset(src):
        return jobs, []
    jobs = [j for j in jobs if j.kind != "file" or encodable(j.src)]
    if shard_spec is not None and shard_spec[0] != 0:
        return jobs, []
    images = {Path(j.src).relative_to(src).as_posix() for j in jobs if j.kind == "file"}
    images |= {Path(f).relative_to(src).as_posix() for j in jobs if j.kind == "dicom" for f in j.files}
    return jobs, copy_others(src, dst, images, skip=dst, force=True, dry_run=dry_run)
