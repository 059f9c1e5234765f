#!/usr/bin/env python
"""Encode cost benchmark: rate-distortion per CPU-second, inrv under time budgets against SPERR.

    python benchmarks/budget.py                                  # both volumes, the issue's budgets
    python benchmarks/budget.py --volumes patch64 --budgets 15s,60s --out bench-budget
    python benchmarks/budget.py --volumes mni152 --budgets 4m --lambdas 1e-3,2e-4,4e-5 --presets fast,balanced
    python benchmarks/budget.py --volumes patch64 --budgets 60s --targets 0.25,0.5,1   # --bpv under a budget

Volumes: ``patch64`` (the 64^3 sample shipped in ``samples/``), ``mni152`` (the MNI ICBM152 2009 T1
template inside the ``nilearn`` wheel, 197x233x189 uint8: ``pip install nilearn``, the ``bench``
extra), or paths to volume files.

Every inrv point is the whole command a user runs, in a child process, timed from outside:
``inrv encode VOL -o tmp.inrv --lambda L --time-budget B`` (wall seconds and the child's CPU seconds),
then ``inrv decode`` (wall seconds), then bits per voxel from the real file size, PSNR over the whole
volume (data range of the original, after restoring the dtype), 3D SSIM and the max error. SPERR
(``imagecodecs``, 3D, bpp mode, one thread) runs in the same process on the same volume. Per volume and
budget: BD-rate against SPERR, PSNR at 0.25 and 0.5 bpv (pchip in log-rate, no extrapolation beyond
1.25x) and the slowest point, i.e. the time-to-quality table of issue 15. ``--presets`` also times
``inrv encode VOL --preset P`` (the presets' own time caps) at the default rate. ``--targets`` also
times ``inrv encode VOL --bpv T --time-budget B`` (the lambda search inside the budget) and reports
how far the rate landed from the target and the PSNR it gave up against the ``--lambda`` points of
the same budget (their curve at the rate reached), which coder the file holds (``inrv encode`` writes
the near-lossless coder's file where it meets the target better; ``--model-only`` measures the neural
model alone) and the BD-rate of those points against SPERR.

Outputs in ``--out`` (default ``bench-budget``): ``budget.csv``, ``budget.md`` and ``budget_<volume>.png``.
On a shared machine, run it alone if you can: the figures are wall times, and the encoder plans its
steps from the speed it measures, so a busy machine gives fewer steps (``budget.md`` records the load).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bdrate  # noqa: E402
import classical  # noqa: E402

from inrv.codec import metrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = ("15s", "60s", "4m", "15m")
LAMBDAS = {"patch64": (1e-2, 2.5e-3, 6e-4, 1.5e-4), "mni152": (1e-3, 2e-4, 4e-5)}
DEFAULT_LAMBDAS = (1e-2, 2.5e-3, 6e-4, 1.5e-4)
TARGETS = (0.25, 0.5)
FIELDS = ["volume", "what", "budget_s", "lmbda", "target", "wall_s", "cpu_s", "dec_s", "steps", "bytes", "bpv", "psnr",
          "ssim", "max_abs_err", "note"]


def volume_path(spec: str) -> tuple[str, str]:
    """(name, path) of ``patch64``, ``mni152`` or a file."""
    if spec == "patch64":
        return spec, os.path.join(ROOT, "samples", "mni_patch64.nii.gz")
    if spec == "mni152":
        import importlib.resources

        try:
            p = importlib.resources.files("nilearn.datasets.data") / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        except ModuleNotFoundError:
            raise SystemExit("mni152 needs nilearn (pip install nilearn, or the bench extra)") from None
        return spec, str(p)
    return os.path.basename(spec).split(".")[0], spec


def parse_seconds(text: str) -> float:
    from inrv.cli.options import parse_duration

    return parse_duration(text)


INRV_CMD: list[str] = []       # --inrv-cmd: another inrv to time (e.g. an older checkout's)


def inrv_cmd() -> list[str]:
    if INRV_CMD:
        return list(INRV_CMD)
    exe = os.path.join(os.path.dirname(sys.executable), "inrv")
    return [exe] if os.path.exists(exe) else [sys.executable, "-c", "from inrv.cli.main import main; main()"]


def run_timed(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), cp


def measure(ref: np.ndarray, test: np.ndarray, nbytes: int) -> dict:
    rng = metrics.data_range(ref)
    return {"bpv": metrics.bits_per_voxel(nbytes, ref.size), "psnr": metrics.psnr(ref, test, rng),
            "ssim": 1.0 if np.array_equal(ref, test) else metrics.ssim3d(ref, test, rng),
            "max_abs_err": metrics.max_abs_error(ref, test)}


def inrv_point(name: str, path: str, ref: np.ndarray, extra: list[str], env: dict, what: str,
               budget_s: float | None, lmbda: float | None) -> dict:
    import inrv

    row = {"volume": name, "what": what, "budget_s": budget_s, "lmbda": lmbda}
    with tempfile.TemporaryDirectory(prefix="inrv-budget-") as tmp:
        enc, dec = os.path.join(tmp, "v.inrv"), os.path.join(tmp, "d.nii.gz")
        wall, cpu, cp = run_timed(inrv_cmd() + ["encode", path, "-o", enc, "-q", "--no-progress"] + extra, env)
        if cp.returncode != 0:
            row["note"] = f"encode failed: {cp.stderr.strip()[-300:]}"
            return row
        row.update(wall_s=wall, cpu_s=cpu, bytes=os.path.getsize(enc))
        f = inrv.read(enc).encoded
        row["steps"] = f.config.get("steps")
        # the coder the file holds: compress may write the near-lossless coder's file for a --bpv target
        row["model"] = f.model + (f" E={f.config.get('max_error'):g}" if f.model == "nearlossless" else "")
        dwall, _, cp = run_timed(inrv_cmd() + ["decode", enc, "-o", dec, "-q"], env)
        if cp.returncode != 0:
            row["note"] = f"decode failed: {cp.stderr.strip()[-300:]}"
            return row
        row["dec_s"] = dwall
        test = np.ascontiguousarray(inrv.load(dec).data)
    row.update(measure(ref, classical.to_dtype(test, ref.dtype), row["bytes"]))
    return row


def sperr_points(name: str, ref: np.ndarray) -> list[dict]:
    rows = []
    for r in classical.sweep("sperr", ref, (0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.65, 0.775, 1.0, 1.5)):
        row = {"volume": name, "what": "sperr", "wall_s": r.enc_s, "dec_s": r.dec_s, "bytes": r.nbytes,
               "note": f"bpp {r.param}"}
        row.update(measure(ref, r.decoded, r.nbytes))
        rows.append(row)
    return rows


def _f(v, nd=2) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _q(rates, quals, target: float) -> str:
    """PSNR at ``target`` bpv as table text; extrapolated values (at most 1.25x in rate) marked *."""
    v, extra = bdrate.quality_at(rates, quals, target)
    return _f(v) + ("*" if extra and math.isfinite(v) else "")


def summarise(rows: list[dict], meta: dict) -> str:
    out = ["# inrv encode cost: rate-distortion under time budgets, SPERR in the same run", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    for vol in dict.fromkeys(r["volume"] for r in rows):
        vr = [r for r in rows if r["volume"] == vol and r.get("bpv") is not None]
        sp = [r for r in vr if r["what"] == "sperr"]
        sr, sq = [r["bpv"] for r in sp], [r["psnr"] for r in sp]
        out += [f"## {vol}", "", "| budget | BD-rate vs SPERR | PSNR @0.25 bpv | PSNR @0.5 bpv | slowest point (s) "
                "| points (bpv / dB / wall s / steps) |", "|---|---|---|---|---|---|"]
        for b in dict.fromkeys(r["budget_s"] for r in vr if r["what"] == "budget"):
            pts = sorted([r for r in vr if r["what"] == "budget" and r["budget_s"] == b], key=lambda r: r["bpv"])
            rr, qq = [r["bpv"] for r in pts], [r["psnr"] for r in pts]
            bd = bdrate.bd_rate(sr, sq, rr, qq) if len(pts) >= 2 else math.nan
            at = [_q(rr, qq, t) if len(pts) >= 2 else "–" for t in TARGETS]
            desc = "; ".join(f"{r['bpv']:.3f} / {r['psnr']:.2f} / {r['wall_s']:.0f} / {r.get('steps')}" for r in pts)
            out.append(f"| {b:g} s | {_f(bd, 1)} % | {at[0]} | {at[1]} | "
                       f"{max(r['wall_s'] for r in pts):.0f} | {desc} |")
        if sp:
            at = [_q(sr, sq, t) for t in TARGETS]
            out.append(f"| SPERR | 0 % | {at[0]} | {at[1]} | {max(r['wall_s'] for r in sp):.2f} | "
                       f"{len(sp)} points, encode {np.median([r['wall_s'] for r in sp]):.2f} s median |")
        tr = [r for r in vr if r["what"] == "target"]
        if tr:
            out += ["", "| budget | --bpv | file | bpv reached | PSNR | dB vs the --lambda points at that rate | wall s | steps |",
                    "|---|---|---|---|---|---|---|---|"]
            for r in tr:
                pts = sorted([p for p in vr if p["what"] == "budget" and p["budget_s"] == r["budget_s"]],
                             key=lambda p: p["bpv"])
                ref_q = bdrate.quality_at([p["bpv"] for p in pts], [p["psnr"] for p in pts], r["bpv"])[0] \
                    if len(pts) >= 2 else math.nan
                out.append(f"| {r['budget_s']:g} s | {r['target']:g} | {r.get('model', '–')} | {r['bpv']:.3f} ({100 * (r['bpv'] / r['target'] - 1):+.1f} %) | "
                           f"{r['psnr']:.2f} | {_f(r['psnr'] - ref_q)} | {r['wall_s']:.0f} | {r.get('steps')} |")
            for b in dict.fromkeys(r["budget_s"] for r in tr):
                pts = sorted([r for r in tr if r["budget_s"] == b], key=lambda r: r["bpv"])
                if len(pts) >= 2 and sp:
                    bd = bdrate.bd_rate(sr, sq, [r["bpv"] for r in pts], [r["psnr"] for r in pts])
                    out.append(f"\n`--bpv` points at {b:g} s, BD-rate vs SPERR: {_f(bd, 1)} %"
                               f" (slowest {max(r['wall_s'] for r in pts):.0f} s)")
        pr = [r for r in rows if r["volume"] == vol and r["what"].startswith("preset")]
        if pr:
            out += ["", "| preset (default rate) | wall s | CPU s | steps | bpv | PSNR | decode s |", "|---|---|---|---|---|---|---|"]
            out += [f"| {r['what'][7:]} | {_f(r.get('wall_s'), 0)} | {_f(r.get('cpu_s'), 0)} | {r.get('steps')} | "
                    f"{_f(r.get('bpv'), 3)} | {_f(r.get('psnr'))} | {_f(r.get('dec_s'), 1)} |" for r in pr]
        out.append("")
    fails = [r for r in rows if (r.get("note") or "").startswith(("encode failed", "decode failed"))]
    out += [f"- failed: {r['volume']} {r['what']} {r.get('budget_s')} {r.get('lmbda')}: {r['note']}" for r in fails]
    return "\n".join(out) + "\n"


def plot(rows: list[dict], vol: str, out_dir: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    vr = [r for r in rows if r["volume"] == vol and r.get("bpv") is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    sp = sorted([r for r in vr if r["what"] == "sperr"], key=lambda r: r["bpv"])
    ax.plot([r["bpv"] for r in sp], [r["psnr"] for r in sp], "k-o", ms=3, label="SPERR")
    for b in sorted({r["budget_s"] for r in vr if r["what"] == "budget"}):
        pts = sorted([r for r in vr if r["what"] == "budget" and r["budget_s"] == b], key=lambda r: r["bpv"])
        ax.plot([r["bpv"] for r in pts], [r["psnr"] for r in pts], "-o", ms=3, label=f"inrv, {b:g} s budget")
    ax.set_xscale("log")
    ax.set_xlabel("bits per voxel (file size)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{vol}: time-to-quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out_dir, f"budget_{vol}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", default="patch64,mni152", help="patch64, mni152 or paths (comma-separated)")
    ap.add_argument("--budgets", default=",".join(BUDGETS), help="time budgets, e.g. 15s,60s,4m,15m")
    ap.add_argument("--lambdas", default=None, help="rate weights (default: per volume, over ~0.1-1 bpv)")
    ap.add_argument("--preset", default="balanced", help="preset of the budgeted points")
    ap.add_argument("--presets", default="", help="also time these presets at their default rate, e.g. fast,balanced")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the encoder (default: unset)")
    ap.add_argument("--targets", default="", help="also encode with --bpv T under each budget, e.g. 0.25,0.5,1")
    ap.add_argument("--no-lambdas", action="store_true", help="no --lambda points (with --targets)")
    ap.add_argument("--model-only", action="store_true",
                    help="pass --model-only to the --targets points (the neural file, never the near-lossless one)")
    ap.add_argument("--no-sperr", action="store_true")
    ap.add_argument("--inrv-cmd", default="", help="the command that runs inrv (default: this environment's)")
    ap.add_argument("--out", default="bench-budget")
    a = ap.parse_args(argv)
    if a.inrv_cmd:
        import shlex

        INRV_CMD[:] = shlex.split(a.inrv_cmd)
    os.makedirs(a.out, exist_ok=True)
    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    budgets = [parse_seconds(b) for b in a.budgets.split(",") if b]
    rows: list[dict] = []
    load0 = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    csv_path = os.path.join(a.out, "budget.csv")
    for spec in [v for v in a.volumes.split(",") if v]:
        name, path = volume_path(spec)
        import inrv

        ref = np.ascontiguousarray(inrv.load(path).data)
        if not a.no_sperr:
            rows += sperr_points(name, ref)
        lams = [float(x) for x in a.lambdas.split(",")] if a.lambdas else LAMBDAS.get(name, DEFAULT_LAMBDAS)
        for b in budgets:
            for lam in ([] if a.no_lambdas else lams):
                rows.append(inrv_point(name, path, ref, ["--preset", a.preset, "--lambda", repr(lam),
                                                         "--time-budget", f"{b:g}s"], env, "budget", b, lam))
                print(name, b, lam, {k: rows[-1].get(k) for k in ("wall_s", "steps", "bpv", "psnr", "note")},
                      flush=True)
                _write_csv(rows, csv_path)
            for t in [float(x) for x in a.targets.split(",") if x]:
                rows.append(inrv_point(name, path, ref, ["--preset", a.preset, "--bpv", repr(t), "--time-budget",
                                                         f"{b:g}s"] + (["--model-only"] if a.model_only else []),
                                       env, "target", b, None))
                rows[-1]["target"] = t
                print(name, b, "bpv", t, {k: rows[-1].get(k) for k in ("wall_s", "steps", "bpv", "psnr", "note")},
                      flush=True)
                _write_csv(rows, csv_path)
        for p in [p for p in a.presets.split(",") if p]:
            rows.append(inrv_point(name, path, ref, ["--preset", p], env, f"preset:{p}", None, None))
            print(name, p, {k: rows[-1].get(k) for k in ("wall_s", "steps", "bpv", "psnr", "note")}, flush=True)
            _write_csv(rows, csv_path)
    meta = {"command": "python benchmarks/budget.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date (UTC)": f"{started:%Y-%m-%d %H:%M} - {_dt.datetime.now(_dt.timezone.utc):%H:%M}",
            "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()} "
                       f"{platform.release()}, Python {platform.python_version()}",
            "load average (1 min) at start / end": f"{load0[0]:.1f} / {os.getloadavg()[0]:.1f}",
            "encoder threads": env.get("OMP_NUM_THREADS", "torch default"),
            "runs": "one per point (wall times of the whole command; on a shared machine compare within a run)"}
    md = summarise(rows, meta)
    for vol in dict.fromkeys(r["volume"] for r in rows):
        p = plot(rows, vol, a.out)
        if p:
            md += f"\n![{vol}]({os.path.basename(p)})\n"
    with open(os.path.join(a.out, "budget.md"), "w") as f:
        f.write(md)
    _write_csv(rows, csv_path)
    print(md)
    return 0


def _write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
