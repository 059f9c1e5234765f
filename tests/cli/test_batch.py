"""Tests of ``inrv batch`` (the cli/batch/ package).

Two kinds:

* engine tests with a stand-in for ``inrv.compress`` (fast; an in-process Dask cluster): discovery,
  sharding, manifest, locks, planning (skip / retry / input changed / config changed), fault isolation;
* acceptance tests through the real engine and the real codec (preset ``tiny`` with very few steps)
  on a LocalCluster of 2 worker processes: a batch with a corrupt input and a DICOM series, shards,
  a rerun that does nothing, and a driver killed with SIGKILL then rerun.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom

import inrv
from inrv.cli import batch as E
from inrv.errors import FormatError, InputError
from inrv.formats.atomic import atomic_output

sitk = pytest.importorskip("SimpleITK")


# ----------------------------------------------------------------------------------------- fixtures

def _write_image(path: Path, arr: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def _dicom_series(folder: Path, uid: str, n: int = 4, size: int = 8, prefix: str = "im", seed: int = 0) -> None:
    """A DICOM series of ``n`` slices written with SimpleITK (consistent Study/Series/SOP UIDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = phantom("int16", (size,) * 3, seed)[:n]
    for k in range(n):
        img = sitk.GetImageFromArray(vol[k:k + 1])
        img.SetSpacing((1.0, 1.0, 2.0))
        tags = {"0020|000e": uid, "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0008|0060": "CT",
                "0020|0032": f"0\\0\\{2.0 * k}", "0020|0013": str(k + 1), "0008|0018": f"{uid}.{k + 1}",
                "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "1\\1", "0018|0050": "2",
                "0020|0052": "1.2.826.0.1.3680043.2.1125.2", "0008|103e": "test series"}
        for tag, val in tags.items():
            img.SetMetaData(tag, val)
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        w.Execute(img)


SERIES_UID = "1.2.826.0.1.3680043.2.1125.9.1"


SERIES_UID_2 = "1.2.826.0.1.3680043.2.1125.9.2"


def make_archive(root: Path, n_nifti: int = 7, size: int = 8, two_series: bool = False) -> dict[str, str]:
    """>= 10 inputs: NIfTI files in nested folders, an NRRD, an MHA, a corrupt NIfTI, a DICOM series
    (with ``two_series`` a second one, of 5 slices, in the same folder) and a file that is not an
    input. Returns {input key: expected output}."""
    expected = {}
    for i in range(n_nifti):
        rel = f"sub-{i % 3}/ses-{i}/scan{i}.nii.gz"
        _write_image(root / rel, phantom("int16", (size,) * 3, i))
        expected[rel] = rel[: -len(".nii.gz")] + ".inrv"
    _write_image(root / "other/vol.nrrd", phantom("int16", (size,) * 3, 100))
    expected["other/vol.nrrd"] = "other/vol.inrv"
    _write_image(root / "other/vol2.mha", phantom("int16", (size,) * 3, 101))
    expected["other/vol2.mha"] = "other/vol2.inrv"
    (root / "broken").mkdir()
    (root / "broken/corrupt.nii.gz").write_bytes(b"this is not a nifti file, just corrupt bytes" * 10)
    expected["broken/corrupt.nii.gz"] = "broken/corrupt.inrv"
    _dicom_series(root / "dicom/study1", SERIES_UID)
    expected[f"dicom/study1/{SERIES_UID}"] = f"dicom/study1/{SERIES_UID}.inrv"
    if two_series:
        _dicom_series(root / "dicom/study1", SERIES_UID_2, n=5, prefix="zz", seed=7)
        expected[f"dicom/study1/{SERIES_UID_2}"] = f"dicom/study1/{SERIES_UID_2}.inrv"
    (root / "README.txt").write_text("not an image")
    return expected


# ------------------------------------------------------------------ a stand-in for inrv.compress / info

FAKE_MAGIC = b"INRVFAKE"


def fake_compress(src, dst, config=None, *, device=None, progress=None, force=False, keep_private=False):
    """Writes magic + sha256 of the input bytes, atomically; corrupt inputs raise InputError."""
    p = Path(src)
    data = b"".join(f.read_bytes() for f in sorted(p.iterdir())) if p.is_dir() else p.read_bytes()
    if b"corrupt" in data:
        raise InputError(f"{src}: not a NIfTI file")
    with atomic_output(dst, force=force) as tmp:
        tmp.write_bytes(FAKE_MAGIC + hashlib.sha256(data).digest() + repr(config).encode())
    if progress:
        progress(1, 1, {})
    return inrv.Summary(path=str(dst), model="fake", shape=(8, 8, 8), dtype="int16", file_bytes=1, raw_bytes=1,
                        ratio=1.0, bpv=1.25, psnr=40.0, ssim=0.95, seconds=0.01, device="cpu")


def fake_info(path):
    data = Path(path).read_bytes()
    if not data.startswith(FAKE_MAGIC):
        raise FormatError(f"{path} is not an .inrv file")
    return inrv.Summary(path=str(path), model="fake", shape=(8, 8, 8), dtype="int16", file_bytes=len(data),
                        raw_bytes=1024, ratio=1024 / len(data), bpv=8 * len(data) / 512)


@pytest.fixture
def fake_codec(monkeypatch):
    monkeypatch.setattr(inrv, "compress", fake_compress)
    monkeypatch.setattr(inrv, "info", fake_info)


@pytest.fixture(scope="module")
def threads_client():
    """An in-process Dask cluster (threads): the stand-in codec patched above is visible to it."""
    from distributed import Client, LocalCluster

    import warnings

    with warnings.catch_warnings():     # "Port 8787 is already in use": other clusters on this machine
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def run_engine(src: Path, dst: Path, client, *, overrides=None, shard_spec=None, retry_failed=False, force=False,
               job_fn=None, verify=False, window=None, rehash=False):
    overrides = {"steps": 3} if overrides is None else overrides
    chash, config = E.config_identity("tiny", overrides)
    jobs = E.discover(src, dst=dst)
    if shard_spec:
        jobs = E.shard(jobs, *shard_spec)
    plan = E.make_plan(jobs, dst, chash, retry_failed=retry_failed, force=force, rehash=rehash)
    stats = E.run_batch(plan, src_root=str(src), dst=str(dst), manifest=E.manifest_name(shard_spec), config=config,
                        preset="tiny", options=overrides, config_hash=chash, device="cpu", client=client,
                        progress=False,
                        job_fn=job_fn, verify=verify, window=window)
    return plan, stats


def ok_rows(dst: Path) -> list[dict]:
    return [r for r in E.read_manifests(dst) if r["status"] == "ok"]


def leftovers(dst: Path) -> list[str]:
    """Temporary files and lock files left in DST."""
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*")
                  if p.name.endswith(".lock") or ".tmp" in p.name or ".stale-" in p.name)


# ----------------------------------------------------------------------------------------- discovery

def test_discover_mirrors_tree_and_groups_dicom_by_series_uid(tmp_path):
    src = tmp_path / "src"
    expected = make_archive(src)
    # a second series in the same folder (files interleaved by name) is a second job, not the same one
    _dicom_series(src / "dicom/study1", "1.2.826.0.1.3680043.2.1125.9.2", prefix="zz", seed=7)
    jobs = E.discover(src)
    got = {j.key: j.output for j in jobs}
    expected["dicom/study1/1.2.826.0.1.3680043.2.1125.9.2"] = "dicom/study1/1.2.826.0.1.3680043.2.1125.9.2.inrv"
    assert got == expected
    assert [j.key for j in jobs] == sorted(got)
    series = [j for j in jobs if j.kind == "dicom"]
    assert len(series) == 2
    assert {Path(f).name[:2] for f in series[0].files} == {"im"}
    assert {Path(f).name[:2] for f in series[1].files} == {"zz"}
    assert all(len(j.files) == 4 for j in series)


def test_discover_filters_and_skips_dst_inside_src(tmp_path):
    src = tmp_path / "src"
    make_archive(src)
    only_nifti = E.discover(src, include=["*.nii.gz"])
    assert only_nifti and all(j.key.endswith(".nii.gz") for j in only_nifti)
    no_sub0 = E.discover(src, exclude=["sub-0/*", "broken/*"])
    assert not any(j.key.startswith(("sub-0/", "broken/")) for j in no_sub0)
    assert any(j.kind == "dicom" for j in no_sub0)
    # an output folder inside SRC is never walked (no .inrv re-encoding, no loops)
    _write_image(src / "out/x.nii.gz", phantom("int16", (8,) * 3, 3))
    assert not any(j.key.startswith("out/") for j in E.discover(src, dst=src / "out"))
    with pytest.raises(inrv.UsageError):
        E.discover(src / "README.txt")


def test_colliding_outputs_get_distinct_names(tmp_path):
    _write_image(tmp_path / "scan.nii", phantom("int16", (8,) * 3, 1))
    _write_image(tmp_path / "scan.nii.gz", phantom("int16", (8,) * 3, 2))
    outs = {j.key: j.output for j in E.discover(tmp_path)}
    assert outs == {"scan.nii": "scan.nii.inrv", "scan.nii.gz": "scan.nii.gz.inrv"}


def test_shards_partition_the_sorted_inputs(tmp_path):
    make_archive(tmp_path)
    jobs = E.discover(tmp_path)
    for n in (1, 2, 3, 5):
        parts = [E.shard(list(reversed(jobs)), i, n) for i in range(n)]
        keys = [j.key for part in parts for j in part]
        assert sorted(keys) == sorted(j.key for j in jobs) and len(keys) == len(set(keys))
    assert E.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(inrv.UsageError):
            E.parse_shard(bad)
    assert E.manifest_name((1, 4)) == "manifest.shard-1-of-4.jsonl"


def test_series_checksum_covers_every_file(tmp_path):
    _dicom_series(tmp_path / "d", SERIES_UID)
    (job,) = E.discover(tmp_path)
    c1, n1 = E.input_checksum(job)
    assert n1 == sum(Path(f).stat().st_size for f in job.files)
    last = Path(job.files[-1])
    last.write_bytes(last.read_bytes()[:-1] + b"\x01")
    assert E.input_checksum(job)[0] != c1


# ----------------------------------------------------------------------------------------- manifest, locks

def test_manifest_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with E.ManifestWriter(path) as w:
        w.append({"input": "a", "status": "ok", "psnr": None})
    with open(path, "ab") as f:
        f.write(b'{"input": "b", "status": "o')          # a crash in the middle of a write
    with E.ManifestWriter(path) as w:
        w.append({"input": "c", "status": "failed"})
    assert [r["input"] for r in E.read_manifests(tmp_path)] == ["a", "c"]
    assert path.read_text().endswith("\n")


def test_output_lock_excludes_live_owners_and_takes_over_stale_ones(tmp_path):
    out = tmp_path / "x.inrv"
    a = E.OutputLock(out, token="run1:x")
    assert a.acquire()
    assert not E.OutputLock(out, token="run2:x").acquire()       # a live process holds it
    assert E.OutputLock(out, token="run1:x").acquire()           # same task (its worker died): take over
    # a lock whose process is dead is stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.with_name("x.inrv.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                                        "token": "other"}))
    import socket

    if socket.gethostname() == os.uname().nodename:
        assert E.OutputLock(out, token="run3:x").acquire()
    # another host's lock is trusted until its heartbeat is older than the timeout
    lock = out.with_name("x.inrv.lock")
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t"}))
    assert not E.OutputLock(out, token="run4:x", stale_seconds=60).acquire()
    old = time.time() - 120
    os.utime(lock, (old, old))
    b = E.OutputLock(out, token="run4:x", stale_seconds=60)
    assert b.acquire()
    b.release()
    assert not lock.exists() and not list(tmp_path.glob("*.stale-*"))


# ----------------------------------------------------------------------------------------- engine (stand-in codec)

def test_engine_records_every_input_isolates_faults_and_resumes(tmp_path, fake_codec, threads_client):
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = make_archive(src)
    plan, stats = run_engine(src, dst, threads_client)
    assert stats.exit_code == E.EXIT_PARTIAL
    rows = E.read_manifests(dst)
    assert sorted(r["input"] for r in rows) == sorted(expected)        # one row per input
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["input"] for r in failed] == ["broken/corrupt.nii.gz"]
    assert failed[0]["error_type"] == "InputError" and "not a NIfTI" in failed[0]["error"]
    assert str(src) not in failed[0]["error"]                           # no absolute paths in the manifest
    for r in ok_rows(dst):
        out = dst / expected[r["input"]]
        assert r["output"] == expected[r["input"]] and out.stat().st_size == r["output_bytes"]
        assert r["checksum"].startswith("sha256:") and r["psnr"] == 40.0 and r["device"] == "cpu"
    assert not (dst / "broken/corrupt.inrv").exists()
    assert leftovers(dst) == []

    # rerun: nothing to do, the failure is remembered (exit 8) and not retried
    plan, stats = run_engine(src, dst, threads_client)
    assert [p.action for p in plan].count("done") == len(expected) - 1
    assert [p.job.key for p in plan if p.action == "failed"] == ["broken/corrupt.nii.gz"]
    assert stats.ok == stats.failed == 0 and stats.exit_code == E.EXIT_PARTIAL
    assert len(E.read_manifests(dst)) == len(expected)

    # the input is repaired; --retry-failed encodes it, and only it
    _write_image(src / "broken/corrupt.nii.gz", phantom("int16", (8,) * 3, 50))
    plan, stats = run_engine(src, dst, threads_client, retry_failed=True)
    assert [p.job.key for p in plan if p.action == "encode"] == ["broken/corrupt.nii.gz"]
    assert stats.exit_code == E.EXIT_OK

    # a changed input, a deleted output and a truncated output are encoded again; nothing else is
    _write_image(src / "sub-0/ses-0/scan0.nii.gz", phantom("int16", (8,) * 3, 99))
    (dst / "sub-1/ses-1/scan1.inrv").unlink()
    t = dst / "other/vol.inrv"
    t.write_bytes(t.read_bytes()[:-3])
    plan, stats = run_engine(src, dst, threads_client)
    redo = {p.job.key: p.reason for p in plan if p.action == "encode"}
    assert set(redo) == {"sub-0/ses-0/scan0.nii.gz", "sub-1/ses-1/scan1.nii.gz", "other/vol.nrrd"}
    assert redo["sub-0/ses-0/scan0.nii.gz"] == "input changed" and "missing" in redo["sub-1/ses-1/scan1.nii.gz"]
    assert stats.ok == 3 and stats.exit_code == E.EXIT_OK

    # a change that keeps size and modification time is seen only with --rehash (input_stat shortcut)
    changed = src / "sub-2/ses-2/scan2.nii.gz"
    st = changed.stat()
    data = bytearray(changed.read_bytes())
    data[-5] ^= 0xFF
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    plan = E.make_plan(E.discover(src), dst, E.config_identity("tiny", {"steps": 3})[0])
    assert all(p.action == "done" for p in plan)
    plan, stats = run_engine(src, dst, threads_client, rehash=True)
    assert [(p.job.key, p.reason) for p in plan if p.action == "encode"] == [("sub-2/ses-2/scan2.nii.gz",
                                                                            "input changed")]

    # another config is another job for every input
    plan, _ = run_engine(src, dst, threads_client, overrides={"steps": 4})
    assert all(p.action == "encode" for p in plan)


def test_engine_shards_cover_each_input_once(tmp_path, fake_codec, threads_client):
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = make_archive(src)
    for i in range(2):      # window=2: at most two tasks submitted at a time, the rest as they finish
        run_engine(src, dst, threads_client, shard_spec=(i, 2), window=2)
    names = sorted(p.name for p in dst.glob("manifest*.jsonl"))
    assert names == ["manifest.shard-0-of-2.jsonl", "manifest.shard-1-of-2.jsonl"]
    rows = E.read_manifests(dst)
    assert sorted(r["input"] for r in rows) == sorted(expected)
    # an unsharded rerun reads every shard's manifest: nothing left to encode
    plan, _ = run_engine(src, dst, threads_client)
    assert not [p for p in plan if p.action == "encode"]


def test_a_held_lock_is_not_overwritten_and_not_recorded(tmp_path, fake_codec, threads_client):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write_image(src / "a.nii.gz", phantom("int16", (8,) * 3, 1))
    _write_image(src / "b.nii.gz", phantom("int16", (8,) * 3, 2))
    (dst).mkdir()
    # another live run is writing b.inrv right now (this process stands in for it)
    (dst / "b.inrv.lock").write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(),
                                                "token": "elsewhere"}))
    _, stats = run_engine(src, dst, threads_client)
    assert stats.ok == 1 and stats.locked == 1 and stats.exit_code == E.EXIT_PARTIAL
    assert [r["input"] for r in E.read_manifests(dst)] == ["a.nii.gz"] and not (dst / "b.inrv").exists()
    (dst / "b.inrv.lock").unlink()
    _, stats = run_engine(src, dst, threads_client)
    assert stats.ok == 1 and stats.exit_code == E.EXIT_OK


def test_leftover_temp_files_of_a_killed_writer_are_removed(tmp_path, fake_codec, threads_client):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write_image(src / "a.nii.gz", phantom("int16", (8,) * 3, 1))
    dst.mkdir()
    (dst / ".a.inrv.k2j3h4.tmp.inrv").write_bytes(b"half a file")
    _, stats = run_engine(src, dst, threads_client)
    assert stats.exit_code == E.EXIT_OK and leftovers(dst) == [] and (dst / "a.inrv").exists()


CRASHY_JOBS = '''
import os, hashlib, json
from pathlib import Path
import inrv
from inrv.cli import batch as E
from inrv.formats.atomic import atomic_output


def _fake_compress(src, dst, config=None, *, device=None, progress=None, force=False, keep_private=False):
    data = Path(src).read_bytes()
    with atomic_output(dst, force=force) as tmp:
        tmp.write_bytes(b"INRVFAKE" + hashlib.sha256(data).digest())
    return inrv.Summary(path=str(dst), model="fake", shape=(8, 8, 8), dtype="int16", file_bytes=40,
                        raw_bytes=1024, ratio=25.6, bpv=2.0, psnr=30.0, ssim=0.9, seconds=0.01, device="cpu")


def job(spec):
    """Kills its worker process on inputs named crash*, encodes the others with a stand-in codec."""
    if Path(spec["key"]).name.startswith("crash"):
        os._exit(3)
    inrv.compress = _fake_compress
    return E.run_job(spec)
'''


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_job(tmp_path, monkeypatch):
    """A task whose worker process dies is retried once elsewhere, then recorded as failed; the
    other jobs finish (real worker processes, a LocalCluster of 2)."""
    from distributed import Client

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(4):
        _write_image(src / f"ok{i}.nii.gz", phantom("int16", (8,) * 3, i))
    _write_image(src / "crash.nii.gz", phantom("int16", (8,) * 3, 9))
    (tmp_path / "crashy_jobs.py").write_text(CRASHY_JOBS)
    monkeypatch.syspath_prepend(str(tmp_path))           # spawned workers inherit sys.path
    import crashy_jobs

    monkeypatch.setattr(inrv, "info", fake_info)
    cluster = E._local_cluster(2, 0, 1)
    try:
        with Client(cluster) as client:
            _, stats = run_engine(src, dst, client, job_fn=crashy_jobs.job)
    finally:
        cluster.close()
    rows = {r["input"]: r for r in E.read_manifests(dst)}
    assert sorted(rows) == sorted(["crash.nii.gz"] + [f"ok{i}.nii.gz" for i in range(4)])
    assert rows["crash.nii.gz"]["status"] == "failed" and rows["crash.nii.gz"]["error_type"] == "KilledWorker"
    assert rows["crash.nii.gz"]["checksum"].startswith("sha256:")
    assert stats.ok == 4 and stats.failed == 1 and stats.exit_code == E.EXIT_PARTIAL


# ----------------------------------------------------------------------------------------- acceptance (real codec)

FAST = ["--preset", "tiny", "--epochs", "2", "--workers", "2", "--threads", "1", "--no-progress"]


def cli(*args):
    from click.testing import CliRunner

    from inrv.cli.batch import batch

    return CliRunner().invoke(batch, [str(a) for a in args], catch_exceptions=False)


def check_outputs(dst: Path, expected: dict[str, str], failed: tuple[str, ...] = ()) -> None:
    """Every input has exactly one ok row (or, for ``failed``, only failed rows), every ok output exists
    once with the recorded size and parses; no temp or lock files are left."""
    rows = E.read_manifests(dst)
    assert sorted({r["input"] for r in rows}) == sorted(expected)
    for key, out in expected.items():
        oks = [r for r in rows if r["input"] == key and r["status"] == "ok"]
        if key in failed:
            assert not oks and not (dst / out).exists()
            continue
        assert len(oks) == 1, f"{key}: {len(oks)} ok rows"
        r = oks[0]
        assert r["output"] == out and (dst / out).stat().st_size == r["output_bytes"]
        info = inrv.info(dst / out)
        assert r["bpv"] == pytest.approx(info.bpv)
        # psnr is None (JSON has no inf) where the lossless fallback was smaller than the trained model
        assert isinstance(r["psnr"], float) or info.details.get("config", {}).get("fallback")
        assert isinstance(r["seconds"], float) and r["device"] == "cpu"
    produced = sorted(str(p.relative_to(dst)) for p in dst.rglob("*.inrv"))
    assert produced == sorted(out for k, out in expected.items() if k not in failed)
    assert leftovers(dst) == []


@pytest.mark.slow
def test_batch_end_to_end_dry_run_shards_corrupt_input_and_rerun(tmp_path):
    """The real engine and codec on local clusters of worker processes: 12 inputs (NIfTI, NRRD, MHA,
    two DICOM series in one folder, a corrupt file) in two shards; then a rerun that does nothing."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = make_archive(src, two_series=True)
    assert len(expected) >= 10

    res = cli(src, "-o", dst, "--dry-run", *FAST)
    assert res.exit_code == 0
    listed = [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("encode")]
    assert sorted(listed) == sorted(expected) and not dst.exists()

    # one worker process per shard here (each array task of a job array has its own cluster)
    codes = [cli(src, "-o", dst, "--shard", f"{i}/2", "--verify", *FAST, "--workers", "1") for i in range(2)]
    corrupt = "broken/corrupt.nii.gz"
    assert sorted(p.name for p in dst.glob("manifest*")) == [E.manifest_name((0, 2)), E.manifest_name((1, 2))]
    shard_inputs = [[json.loads(ln)["input"] for ln in (dst / E.manifest_name((i, 2))).read_text().splitlines()]
                    for i in range(2)]
    assert not set(shard_inputs[0]) & set(shard_inputs[1])
    assert sorted(shard_inputs[0] + shard_inputs[1]) == sorted(expected)      # each input exactly once
    bad_shard = 0 if corrupt in shard_inputs[0] else 1
    assert codes[bad_shard].exit_code == 8 and corrupt in codes[bad_shard].stderr
    assert codes[1 - bad_shard].exit_code == 0, codes[1 - bad_shard].stderr
    check_outputs(dst, expected, failed=(corrupt,))
    rows = E.read_manifests(dst)
    bad = [r for r in rows if r["status"] != "ok"]
    assert [r["input"] for r in bad] == [corrupt] and bad[0]["error"] and bad[0]["error_type"] == "InputError"
    assert all(r["verified"] is True for r in rows if r["status"] == "ok")
    # two series in one folder: two outputs, each from its own slices only
    series = {r["series_uid"]: r for r in rows if r["kind"] == "dicom"}
    assert sorted(series) == [SERIES_UID, SERIES_UID_2] and all(r["status"] == "ok" for r in series.values())
    assert [inrv.info(dst / series[u]["output"]).shape[2] for u in (SERIES_UID, SERIES_UID_2)] == [4, 5]

    # the same command again (unsharded: it reads both shard manifests): nothing is encoded
    before = {p.name: p.read_bytes() for p in dst.glob("manifest*")}
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.inrv")}
    t0 = time.perf_counter()
    again = cli(src, "-o", dst, *FAST)
    assert again.exit_code == 8                      # the corrupt input is still failed
    assert time.perf_counter() - t0 < 10             # no cluster was started
    assert f"skipped (done)    {len(expected) - 1}" in again.stderr and "encoded ok        0" in again.stderr
    assert {p.name: p.read_bytes() for p in dst.glob("manifest*")} == before
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.inrv")} == mtimes
    dry = cli(src, "-o", dst, "--dry-run", *FAST)
    assert not [ln for ln in dry.stdout.splitlines() if ln.startswith("encode")]


@pytest.mark.slow
def test_a_killed_driver_loses_nothing_and_a_rerun_completes(tmp_path):
    """SIGKILL on the driver (a subprocess) once the manifest has rows; the rerun encodes only what
    is missing: every output exactly once, verified, no duplicate rows, no temp or lock files."""
    psutil = pytest.importorskip("psutil")
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = make_archive(src, n_nifti=3)
    del expected["broken/corrupt.nii.gz"]
    (src / "broken/corrupt.nii.gz").unlink()
    args = [sys.executable, "-m", "inrv", "batch", str(src), "-o", str(dst), *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    manifest = dst / "manifest.jsonl"
    deadline = time.time() + 90
    children = []
    try:
        while time.time() < deadline and driver.poll() is None:
            with __import__("contextlib").suppress(psutil.Error):
                children = psutil.Process(driver.pid).children(recursive=True) or children
            if manifest.exists() and len(E.read_manifests(dst)) >= 2:
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the batch finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()
    # the worker processes notice their parent is gone and exit; make sure before the rerun
    _, alive = psutil.wait_procs(children, timeout=30)
    for p in alive:
        p.kill()
    done_before = len(ok_rows(dst))
    assert 2 <= done_before < len(expected)

    res = cli(src, "-o", dst, "--verify", *FAST, "--workers", "1")      # one worker is enough for the rest
    assert res.exit_code == 0, res.stderr
    assert f"skipped (done)    {done_before}" in res.stderr
    check_outputs(dst, expected)
    rows = E.read_manifests(dst)
    assert len(rows) == len(expected)
    new = [r for r in rows if r["verified"]]
    assert len(new) == len(expected) - done_before


_ACTIVE = [0]
_GUARD = threading.Lock()


def _counted_job(spec):
    """run_job, counting the jobs still running in the in-process worker threads."""
    with _GUARD:
        _ACTIVE[0] += 1
    try:
        return E.run_job(spec)
    finally:
        with _GUARD:
            _ACTIVE[0] -= 1


def test_ctrl_c_stops_cleanly_and_a_rerun_continues(tmp_path, fake_codec, threads_client):
    """Ctrl-C in the driver (here raised after the first recorded row): futures cancelled, exit code
    130, the manifest intact; the same command then finishes the rest, each input recorded once."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = make_archive(src, n_nifti=4)

    def interrupt(row):
        raise KeyboardInterrupt

    chash, config = E.config_identity("tiny", {"steps": 3})
    plan = E.make_plan(E.discover(src), dst, chash)
    stats = E.run_batch(plan, src_root=str(src), dst=str(dst), manifest="manifest.jsonl", config=config,
                        config_hash=chash, client=threads_client, progress=False, on_row=interrupt,
                        job_fn=_counted_job)
    assert stats.interrupted and stats.exit_code == E.EXIT_INTERRUPTED
    assert "interrupted" in E.summary_table(stats)
    assert len(E.read_manifests(dst)) == 1
    # threads cannot be killed: a cancelled task that had started finishes (then unlocks) on its own;
    # a real cluster's worker processes are closed instead
    # (a cancelled task can still start a moment later: wait until no job ran and no lock was held for 1 s)
    deadline, quiet_since = time.time() + 30, None
    while time.time() < deadline:
        busy = _ACTIVE[0] or any(dst.rglob("*.lock"))
        quiet_since = None if busy else (quiet_since or time.time())
        if quiet_since and time.time() - quiet_since > 1.0:
            break
        time.sleep(0.05)
    _, stats = run_engine(src, dst, threads_client)
    rows = E.read_manifests(dst)
    assert sorted(r["input"] for r in rows) == sorted(expected) and len(rows) == len(expected)
    assert stats.exit_code == E.EXIT_PARTIAL and leftovers(dst) == []     # the corrupt input


def test_out_of_memory_on_a_gpu_is_retried_once_on_the_cpu(tmp_path, monkeypatch, threads_client):
    calls = []

    def compress_oom_on_cuda(src, dst, config=None, *, device=None, **kw):
        calls.append(device)
        if str(device).startswith("cuda"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return fake_compress(src, dst, config, device=device, **kw)

    monkeypatch.setattr(inrv, "compress", compress_oom_on_cuda)
    monkeypatch.setattr(inrv, "info", fake_info)
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write_image(src / "a.nii.gz", phantom("int16", (8,) * 3, 1))
    chash, config = E.config_identity("tiny", {"steps": 3})
    plan = E.make_plan(E.discover(src), dst, chash)
    stats = E.run_batch(plan, src_root=str(src), dst=str(dst), manifest="manifest.jsonl", config=config,
                        config_hash=chash, device="cuda", client=threads_client, progress=False)
    (row,) = E.read_manifests(dst)
    assert calls == ["cuda", "cpu"] and stats.exit_code == E.EXIT_OK
    assert row["status"] == "ok" and row["device"] == "cpu" and "out of memory" in row["attempt_note"]


def test_verify_output_checks_shape_geometry_and_psnr(tmp_path):
    """``--verify``'s check, on a real (tiny, 2-step) encode."""
    vol = phantom("int16", (8,) * 3, 3)
    _write_image(tmp_path / "a.nii.gz", vol)
    summary = inrv.compress(tmp_path / "a.nii.gz", tmp_path / "a.inrv", "tiny", steps=2, device="cpu")
    psnr = summary.psnr
    assert E.verify_output(str(tmp_path / "a.nii.gz"), str(tmp_path / "a.inrv"), psnr) is None
    wrong = psnr + 1.0 if math.isfinite(psnr) else 60.0      # (inf: the lossless fallback was smaller)
    assert "PSNR" in E.verify_output(str(tmp_path / "a.nii.gz"), str(tmp_path / "a.inrv"), wrong)
    _write_image(tmp_path / "other.nii.gz", phantom("int16", (8,) * 3, 4))           # same grid, other voxels
    assert "PSNR" in E.verify_output(str(tmp_path / "other.nii.gz"), str(tmp_path / "a.inrv"), psnr)
    _write_image(tmp_path / "moved.nii.gz", vol, spacing=(1.0, 1.0, 3.0))
    assert "spacing" in E.verify_output(str(tmp_path / "moved.nii.gz"), str(tmp_path / "a.inrv"), psnr)
    _write_image(tmp_path / "small.nii.gz", vol[:6])
    assert "shape" in E.verify_output(str(tmp_path / "small.nii.gz"), str(tmp_path / "a.inrv"), psnr)


def test_an_output_written_by_an_overlapping_run_after_the_plan_is_not_redone(tmp_path, fake_codec,
                                                                             threads_client):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write_image(src / "a.nii.gz", phantom("int16", (8,) * 3, 1))
    _write_image(src / "b.nii.gz", phantom("int16", (8,) * 3, 2))
    chash, config = E.config_identity("tiny", {"steps": 3})
    planned_at = time.time() - 5
    plan = E.make_plan(E.discover(src), dst, chash)
    assert [p.action for p in plan] == ["encode", "encode"]
    dst.mkdir()
    # another run encodes b after this one's plan, and its driver records it
    fake_compress(src / "b.nii.gz", dst / "b.inrv")
    with E.ManifestWriter(dst / "manifest.shard-1-of-2.jsonl") as w:
        w.append({"input": "b.nii.gz", "status": "ok", "checksum": E.input_checksum(plan[1].job)[0],
                  "config_hash": chash, "output": "b.inrv", "output_bytes": (dst / "b.inrv").stat().st_size,
                  "finished": time.time()})
    stats = E.run_batch(plan, src_root=str(src), dst=str(dst), manifest="manifest.jsonl", config=config,
                        config_hash=chash, client=threads_client, progress=False, planned_at=planned_at)
    assert stats.ok == 1 and stats.skipped_done == 1 and stats.exit_code == E.EXIT_OK
    assert sorted(r["input"] for r in E.read_manifests(dst)) == ["a.nii.gz", "b.nii.gz"]
    assert [json.loads(ln)["input"] for ln in (dst / "manifest.jsonl").read_text().splitlines()] == ["a.nii.gz"]


def test_an_output_that_fails_verify_is_removed_and_recorded_failed(tmp_path, fake_codec, threads_client):
    """The stand-in codec's outputs cannot be decoded: --verify must catch that."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write_image(src / "a.nii.gz", phantom("int16", (8,) * 3, 1))
    _, stats = run_engine(src, dst, threads_client, verify=True)
    (row,) = E.read_manifests(dst)
    assert row["status"] == "failed" and row["error_type"] == "VerifyError" and row["verified"] is None
    assert not (dst / "a.inrv").exists() and leftovers(dst) == [] and stats.exit_code == E.EXIT_PARTIAL


def test_cli_submits_to_a_running_scheduler(tmp_path, fake_codec, threads_client):
    """``--scheduler ADDRESS``: the command connects to an existing cluster (here the in-process one)
    and leaves it running; then ``--dry-run`` shows everything done."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = make_archive(src, n_nifti=2)
    address = threads_client.scheduler.address
    res = cli(src, "-o", dst, "--preset", "tiny", "--epochs", "3", "--scheduler", address, "--no-progress")
    assert res.exit_code == 8 and "broken/corrupt.nii.gz" in res.stderr
    assert sorted(r["input"] for r in E.read_manifests(dst)) == sorted(expected)
    assert threads_client.submit(sum, [1, 2]).result() == 3          # the cluster still works
    dry = cli(src, "-o", dst, "--preset", "tiny", "--epochs", "3", "--dry-run")
    actions = [ln.split("  ")[0].strip() for ln in dry.stdout.splitlines()]
    assert actions.count("skip (done)") == len(expected) - 1 and actions.count("skip (failed earlier)") == 1
    # another config is other work
    dry = cli(src, "-o", dst, "--preset", "tiny", "--epochs", "4", "--dry-run")
    assert [ln.split()[0] for ln in dry.stdout.splitlines()] == ["encode"] * len(expected)


def test_inrv_batch_is_reachable_from_the_main_command(tmp_path):
    from click.testing import CliRunner

    from inrv.cli.main import main

    if "batch" not in main.commands:
        pytest.skip("inrv batch is not registered in cli/main.py yet (main.add_command(batch))")
    make_archive(tmp_path / "src", n_nifti=1)
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "src"), "-o", str(tmp_path / "dst"), "--dry-run"])
    assert res.exit_code == 0 and res.stdout.count("encode") == 5 and not (tmp_path / "dst").exists()


def test_discovery_finds_detached_header_volumes(tmp_path):
    """.nhdr/.mhd are volumes too (the one suffix table of formats/discovery.py); their data files are
    neither jobs nor DICOM."""
    _write_image(tmp_path / "a/v.mhd", phantom("int16", (6,) * 3, 1))      # v.mhd + v.raw
    _write_image(tmp_path / "b/w.nhdr", phantom("int16", (6,) * 3, 2))     # w.nhdr + w.raw.gz (or w.raw)
    jobs = E.discover(tmp_path)
    assert [(j.key, j.kind, j.output) for j in jobs] == [("a/v.mhd", "file", "a/v.inrv"),
                                                         ("b/w.nhdr", "file", "b/w.inrv")]
