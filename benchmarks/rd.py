#!/usr/bin/env python
"""Rate-distortion benchmark: inrv against the codecs users would pick instead.

    python benchmarks/rd.py samples/mni_patch64.nii.gz --quick            # CPU, a few minutes
    python benchmarks/rd.py scan1.nii.gz scan2.nii.gz --out bench/rd      # full sweep, GPU if present
    python benchmarks/rd.py vol.nii.gz --codecs sperr,jpeg2k --inrv-presets paper balanced:target_bpv=0.5

For each volume and each point (one codec at one parameter, or one inrv preset with its overrides):
the real compressed bytes -> bits per voxel, PSNR over the whole volume and over the foreground,
3D SSIM, max absolute error, encode and decode seconds, the device, and for inrv the peak GPU memory.
Decoded values are rounded and clipped back to the original dtype before any metric. The metrics are
``inrv.codec.metrics``; BD-rate and interpolation are ``benchmarks/bdrate.py``; codec adapters are
``benchmarks/classical.py``. See docs/benchmarks.md.

Outputs in ``--out`` (default ``bench-rd``): ``rd.csv`` (every point), ``rd.md`` (tables at 0.25, 0.5,
0.775, 1 and 2 bpv, BD-rates against SPERR, speed, lossless references) and per volume
``rd_psnr_<name>.png`` and ``rd_ssim_<name>.png``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bdrate  # noqa: E402
import volumes as volumes_by_name  # noqa: E402
import classical  # noqa: E402

from inrv.codec import metrics  # noqa: E402

TARGETS = (0.25, 0.5, 0.775, 1.0, 2.0)
ANCHOR = "sperr"
CSV_FIELDS = ["volume", "codec", "label", "kind", "param", "bytes", "voxels", "bpv", "psnr", "psnr_fg", "ssim",
              "max_abs_err", "enc_s", "dec_s", "device", "peak_gpu_mib", "note"]
MAX_END_STEP_DB = 10.0    # no PSNR extrapolation from an end segment that jumps more than this
RATE_KEYS = ("target_bpv", "lmbda", "target_psnr", "max_error")   # overrides that move along one rate curve


@dataclass
class Row:
    volume: str
    codec: str                 # curve id: a classical codec name or "inrv:<preset>[:fixed overrides]"
    label: str
    kind: str
    param: str
    bytes: int | None = None
    voxels: int | None = None
    bpv: float = math.nan
    psnr: float = math.nan
    psnr_fg: float = math.nan
    ssim: float = math.nan
    max_abs_err: float = math.nan
    enc_s: float = math.nan
    dec_s: float = math.nan
    device: str = "cpu"
    peak_gpu_mib: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_csv(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in CSV_FIELDS}
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = "" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.6g}")
            elif v is None:
                d[k] = ""
        return d


# ---------------------------------------------------------------- volumes and metrics

def load_volume(path: str) -> np.ndarray:
    """Stored voxel values in the original dtype, array order (x, y, z), C-contiguous."""
    try:
        import inrv

        data = inrv.load(path).data
    except (ImportError, ModuleNotFoundError):
        import nibabel as nib  # formats.io not available: NIfTI only

        img = nib.load(path)
        proxy = img.dataobj
        data = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
    return np.ascontiguousarray(data)


def measure(ref: np.ndarray, test: np.ndarray, nbytes: int, *, with_ssim: bool = True) -> dict[str, float]:
    """bpv, PSNR (whole / foreground), SSIM, max abs error of ``test`` (already in ref's dtype)."""
    rng = metrics.data_range(ref)
    same = np.array_equal(ref, test)
    out = {"bpv": metrics.bits_per_voxel(nbytes, ref.size),
           "psnr": metrics.psnr(ref, test, rng),
           "psnr_fg": metrics.psnr_foreground(ref, test, rng),
           "max_abs_err": metrics.max_abs_error(ref, test)}
    if same:
        out["ssim"] = 1.0
    elif with_ssim:
        out["ssim"] = metrics.ssim3d(ref, test, rng)
    else:
        out["ssim"] = math.nan
    return out


# ---------------------------------------------------------------- inrv points

def parse_inrv_point(spec: str) -> tuple[str, dict[str, Any]]:
    """``"preset[:key=value[:key=value...]]"`` -> (preset, overrides). Values: int, float, none, or text."""
    parts = spec.split(":")
    preset, overrides = parts[0].strip(), {}
    if not preset:
        raise ValueError(f"bad --inrv-presets item {spec!r}: empty preset name")
    for p in parts[1:]:
        if "=" not in p:
            raise ValueError(f"bad --inrv-presets item {spec!r}: expected key=value after ':'")
        k, v = (s.strip() for s in p.split("=", 1))
        overrides[k] = _parse_value(v)
    return preset, overrides


def _parse_value(v: str) -> Any:
    if v.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def default_inrv_points(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    """The inrv sweep when ``--inrv-presets`` is not given (depends on the presets that exist)."""
    from inrv.codec.config import PRESETS

    if quick:
        pts = [("tiny", {})]
        if "latent-tiny" in PRESETS:
            pts.append(("latent-tiny", {}))
        if "lossless" in PRESETS:          # the error-bounded coder (issue #16): seconds, no training
            pts += [("lossless", {"max_error": e}) for e in (1, 4)]
        return pts
    pts = [("paper", {})] if "paper" in PRESETS else []
    for name in ("fast", "balanced", "best"):
        if name in PRESETS:
            pts += [(name, {"target_bpv": t}) for t in (0.25, 0.5, 1.0, 2.0)]
    if "lossless" in PRESETS:
        pts += [("lossless", {"max_error": e}) for e in (0, 1, 2, 4, 8, 16)]
    return pts


def _curve_id(preset: str, overrides: dict[str, Any]) -> str:
    fixed = [f"{k}={v}" for k, v in sorted(overrides.items()) if k not in RATE_KEYS]
    return ":".join(["inrv", preset, *fixed])


def run_inrv_point(src: str, ref: np.ndarray, name: str, preset: str, overrides: dict[str, Any],
                   device: str | None, with_ssim: bool) -> Row:
    """Compress ``src`` through the public API into a real .inrv file, decode it back, measure."""
    import inrv

    param = ",".join(f"{k}={v}" for k, v in overrides.items()) or "preset defaults"
    cid = _curve_id(preset, overrides)
    row = Row(name, cid, f"inrv {cid[5:]}", "inrv", param)
    torch = _torch_if_cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="inrv-rd-") as tmp:
        path = os.path.join(tmp, "v.inrv")
        t0 = time.perf_counter()
        summary = inrv.compress(src, path, preset, device=device, **overrides)
        wall = time.perf_counter() - t0
        nbytes = os.path.getsize(path)
        f = inrv.read(path)
        t0 = time.perf_counter()
        arr = inrv.restore(path, device=device).data
        row.dec_s = time.perf_counter() - t0
    # summary.seconds = load + fit (what a user waits for before the file exists); wall also has
    # compress()'s own quality check and the write.
    row.enc_s = float(summary.seconds if summary.seconds is not None else wall)
    row.bytes, row.voxels = nbytes, ref.size
    arr = np.asarray(arr)
    if arr.shape != ref.shape:
        raise RuntimeError(f"inrv decoded shape {arr.shape} != source {ref.shape}")
    for k, v in measure(ref, classical.to_dtype(arr, ref.dtype), nbytes, with_ssim=with_ssim).items():
        setattr(row, k, v)
    row.device = _device_name(device)
    if torch is not None and row.device.startswith("cuda"):
        row.peak_gpu_mib = torch.cuda.max_memory_allocated() / 2**20
    row.note = f"steps={f.encoded.stats.get('steps', '')}"
    return row


def _torch_if_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _device_name(device: str | None) -> str:
    try:
        from inrv.codec.device import resolve_device

        return str(resolve_device(device))
    except Exception:  # noqa: BLE001 - only used for labelling
        return device or "cpu"


# ---------------------------------------------------------------- classical points

def run_classical(name: str, ref: np.ndarray, codec: str, quick: bool, with_ssim: bool) -> list[Row]:
    c = classical.CODECS[codec]
    rows = []
    for res in classical.sweep(codec, ref, quick=quick):
        row = Row(name, codec, c.label, c.kind, f"{c.param_name}={res.param:g}", res.nbytes, ref.size,
                  enc_s=res.enc_s, dec_s=res.dec_s, device="cpu")
        for k, v in measure(ref, res.decoded, res.nbytes, with_ssim=with_ssim).items():
            setattr(row, k, v)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- report

def curves(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        if r.bytes is not None:
            out.setdefault(r.codec, []).append(r)
    return out


def _fmt(v: float, extrap: bool = False, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞"
    s = f"{v:.{nd}f}"
    return f"{s}*" if extrap else s


def markdown(rows: list[Row], volumes: dict[str, dict], meta: dict[str, str], plots: dict[str, list[str]]) -> str:
    lines = ["# Rate-distortion benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "PSNR: dB, peak = original max − min, whole volume. PSNR fg: same peak, foreground voxels only "
              "(voxels > the volume minimum). bpv = 8 × real bytes / voxels. Values at a rate are interpolated "
              "(pchip in log(rate)) between the points of the codec's rate-distortion hull; `*` = extrapolated from the end segment (at most "
              "1.25× beyond the measured rates, and not from a segment that jumps more than 10 dB), ∞ = the "
              "codec was already lossless at a lower rate, – = out of range. BD-rate: against SPERR, pchip fit of log-rate "
              "vs PSNR over the overlapping PSNR interval (negative = fewer bits than SPERR).", ""]
    for vname, vinfo in volumes.items():
        vrows = [r for r in rows if r.volume == vname]
        cs = curves(vrows)
        # curves (>= 2 points) go in the fixed-rate and BD-rate tables; single points in the inrv table
        lossy = {k: v for k, v in cs.items() if v[0].kind != "lossless" and len(v) >= 2}
        lines += [f"## {vname}", "",
                  f"shape {vinfo['shape']}, {vinfo['dtype']}, {vinfo['voxels']:,} voxels, data range "
                  f"{vinfo['range']}, foreground {vinfo['fg']:.1%} of voxels", ""]
        for metric, title, nd in (("psnr", "PSNR (dB)", 2), ("psnr_fg", "foreground PSNR (dB)", 2),
                                  ("ssim", "3D SSIM", 4)):
            lines += [f"### {title} at fixed rates", "",
                      "| codec | " + " | ".join(f"{t:g} bpv" for t in TARGETS) + " |",
                      "|---|" + "---|" * len(TARGETS)]
            for cid, pts in lossy.items():
                cells = []
                for t in TARGETS:
                    v, ex = bdrate.quality_at([p.bpv for p in pts], [getattr(p, metric) for p in pts], t,
                                              max_end_step=None if metric == "ssim" else MAX_END_STEP_DB)
                    if metric == "ssim" and ex:
                        v = min(v, 1.0)
                    cells.append(_fmt(v, ex, nd))
                lines.append(f"| {pts[0].label} | " + " | ".join(cells) + " |")
            lines.append("")
        if ANCHOR in lossy:
            a = lossy[ANCHOR]
            # the cheapest lossless reference: lossy points above its rate are of no practical use
            ll = [p.bpv for p in vrows if p.kind == "lossless" and p.bytes is not None]
            cap = min(ll) if ll else math.inf
            lines += ["### BD-rate against SPERR", "",
                      "| codec | BD-rate (PSNR) | PSNR overlap (dB) | BD-rate (foreground PSNR) | "
                      f"BD-rate (PSNR), points below the lossless rate ({cap:.3g} bpv) |", "|---|---|---|---|---|"]
            for cid, pts in lossy.items():
                if cid == ANCHOR:
                    continue
                br = bdrate.bd_rate([p.bpv for p in a], [p.psnr for p in a], [p.bpv for p in pts],
                                    [p.psnr for p in pts])
                brf = bdrate.bd_rate([p.bpv for p in a], [p.psnr_fg for p in a], [p.bpv for p in pts],
                                     [p.psnr_fg for p in pts])
                a2 = [p for p in a if p.bpv < cap]
                t2 = [p for p in pts if p.bpv < cap]
                brc = bdrate.bd_rate([p.bpv for p in a2], [p.psnr for p in a2], [p.bpv for p in t2],
                                     [p.psnr for p in t2])
                lo2, hi2 = bdrate.overlap([p.psnr for p in a2], [p.psnr for p in t2])
                lo, hi = bdrate.overlap([p.psnr for p in a], [p.psnr for p in pts])
                ov = "none" if math.isnan(lo) else f"{lo:.1f}–{hi:.1f}"
                ov2 = "" if math.isnan(lo2) else f" ({lo2:.1f}–{hi2:.1f} dB)"
                lines.append(f"| {pts[0].label} | {_fmt_pct(br)} | {ov} | {_fmt_pct(brf)} | {_fmt_pct(brc)}{ov2} |")
            lines.append("")
        inrv_rows = [r for r in vrows if r.kind == "inrv" and r.bytes is not None]
        if inrv_rows:
            a = lossy.get(ANCHOR, [])
            ar, aq = [p.bpv for p in a], [p.psnr for p in a]
            lines += ["### inrv points (measured, and SPERR at the same rate / quality)", "",
                      "| inrv point | bytes | bpv | PSNR | PSNR fg | SSIM | max err | SPERR PSNR at this bpv | "
                      "SPERR bpv at this PSNR | dominated by |", "|---|---|---|---|---|---|---|---|---|---|"]
            others = [p for p in vrows if p.kind != "inrv" and p.bytes is not None]
            n_dom = 0
            for r in inrv_rows:
                sp, ex = bdrate.quality_at(ar, aq, r.bpv) if a else (math.nan, False)
                sr = bdrate.rate_at(ar, aq, r.psnr) if a else math.nan
                dom = dominating(r, others)
                n_dom += dom is not None
                by = "–" if dom is None else f"{dom.label} ({dom.bpv:.3f} bpv, {_fmt(dom.psnr)} dB)"
                lines.append(f"| {r.label} ({r.param}; {r.note}) | {r.bytes:,} | {r.bpv:.3f} | {_fmt(r.psnr)} | "
                             f"{_fmt(r.psnr_fg)} | {_fmt(r.ssim, nd=4)} | {_fmt(r.max_abs_err, nd=0)} | "
                             f"{_fmt(sp, ex)} | {_fmt(sr, nd=3)} | {by} |")
            lines += ["", f"inrv points dominated by another codec's point (no more bits and no lower PSNR, one of "
                          f"them strictly): {n_dom} of {len(inrv_rows)}.", ""]
        lossless = {k: v for k, v in cs.items() if v[0].kind == "lossless"}
        if lossless:
            lines += ["### Lossless references", "", "| codec | bpv | bytes | encode s | decode s |",
                      "|---|---|---|---|---|"]
            for pts in lossless.values():
                p = pts[0]
                lines.append(f"| {p.label} | {p.bpv:.3f} | {p.bytes:,} | {p.enc_s:.3f} | {p.dec_s:.3f} |")
            lines.append("")
        lines += ["### Speed (median over the codec's points; seconds for the whole volume)", "",
                  "| codec | device | encode s | decode s | encode voxels/s | decode voxels/s | peak GPU MiB |",
                  "|---|---|---|---|---|---|---|"]
        for pts in cs.values():
            te = float(np.median([p.enc_s for p in pts]))
            td = float(np.median([p.dec_s for p in pts]))
            nv = vinfo["voxels"]
            peaks = [p.peak_gpu_mib for p in pts if p.peak_gpu_mib is not None]
            peak = f"{max(peaks):.0f}" if peaks else "–"
            lines.append(f"| {pts[0].label} | {pts[0].device} | {te:.3g} | {td:.3g} | {_si(nv / te)} | "
                         f"{_si(nv / td)} | {peak} |")
        lines.append("")
        failed = [r for r in vrows if r.bytes is None]
        if failed:
            lines += ["### Skipped", ""] + [f"- {r.label}: {r.note}" for r in failed] + [""]
        for p in plots.get(vname, []):
            lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})", ""]
    return "\n".join(lines)


def dominating(r: Row, others: list[Row]) -> Row | None:
    """The smallest of ``others`` that dominates ``r``: at most its bits per voxel and at least its PSNR,
    one of the two strictly (a lossless point, PSNR inf, dominates every lossy point at or above its rate)."""
    dom = [p for p in others if p.bpv <= r.bpv and p.psnr >= r.psnr and (p.bpv < r.bpv or p.psnr > r.psnr)]
    return min(dom, key=lambda p: (p.bpv, -p.psnr)) if dom else None


def _si(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g}"


def _fmt_pct(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:+.1f} %"


def plot(rows: list[Row], vname: str, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = curves([r for r in rows if r.volume == vname])
    stem = os.path.splitext(os.path.splitext(vname)[0])[0]
    paths = []
    for metric, ylabel in (("psnr", "PSNR (dB, whole volume)"), ("ssim", "3D SSIM")):
        fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=100)
        for cid, pts in cs.items():
            if pts[0].kind == "lossless":
                ax.axvline(pts[0].bpv, ls=":", lw=1, color="grey")
                ax.annotate(pts[0].label, (pts[0].bpv, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                            fontsize=7, color="grey", ha="right", va="bottom")
                continue
            r, q = bdrate.rd_hull([p.bpv for p in pts], [getattr(p, metric) for p in pts])
            if len(r) == 0:
                continue
            style = dict(marker="o", ms=3, lw=1.2)
            if pts[0].kind == "inrv":
                style.update(marker="*", ms=8, lw=2)
            ax.plot(r, q, label=pts[0].label, **style)
        ax.set_xscale("log")
        ax.set_xticks([0.1, 0.25, 0.5, 1, 2, 4, 8])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        lows = [p.bpv for pts in cs.values() for p in pts if p.kind != "lossless" and p.bpv > 0]
        ax.set_xlim(min([0.08] + [0.9 * b for b in lows]), 9)     # every measured point stays visible
        if metric == "psnr":   # near-lossless points (> 60 dB) would squash the useful range
            ax.set_ylim(max(ax.get_ylim()[0], 10), min(ax.get_ylim()[1], 60))
        else:
            ax.set_ylim(max(ax.get_ylim()[0], 0.4), 1.0)
        ax.set_xlabel("bits per voxel (real compressed bytes)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{vname}: {metric.upper()} vs rate", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        path = os.path.join(out_dir, f"rd_{metric}_{stem}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def read_csv(path: str) -> list[Row]:
    """Rows of an earlier run's rd.csv (to redraw tables and plots without re-running the codecs)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for d in csv.DictReader(fh):
            r = Row(d["volume"], d["codec"], d["label"], d["kind"], d["param"], note=d["note"], device=d["device"])
            r.bytes = int(d["bytes"]) if d["bytes"] else None
            r.voxels = int(d["voxels"]) if d["voxels"] else None
            for k in ("bpv", "psnr", "psnr_fg", "ssim", "max_abs_err", "enc_s", "dec_s"):
                setattr(r, k, float(d[k]) if d[k] else math.nan)
            r.peak_gpu_mib = float(d["peak_gpu_mib"]) if d["peak_gpu_mib"] else None
            rows.append(r)
    return rows


def write_csv(rows: list[Row], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(r.as_csv())


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("volumes", nargs="+", metavar="VOLUME", help="NIfTI (or any format inrv reads) volumes")
    ap.add_argument("--quick", action="store_true",
                    help="a few points per codec and the small inrv preset on the CPU (CI check, minutes)")
    ap.add_argument("--codecs", default="all",
                    help=f"comma list of classical codecs, 'all' or 'none' (known: {','.join(classical.CODECS)})")
    ap.add_argument("--inrv-presets", nargs="*", default=None, metavar="PRESET[:k=v...]",
                    help="inrv points, each a preset with optional config overrides, e.g. "
                         "'tiny' 'paper:steps=2000' 'balanced:target_bpv=0.5'; none given = no inrv. "
                         "Default: quick -> tiny (+ latent-tiny); full -> paper and the latent presets at "
                         "target_bpv 0.25, 0.5, 1, 2")
    ap.add_argument("--device", default=None,
                    help="inrv device: auto (default: GPU if present), cpu, cuda; --quick defaults to cpu")
    ap.add_argument("--no-ssim", action="store_true", help="skip 3D SSIM (slow on large volumes)")
    ap.add_argument("--out", default="bench-rd", help="output folder (created)")
    ap.add_argument("--from-csv", metavar="CSV",
                    help="run nothing: redraw rd.md and the plots from an earlier rd.csv (for the VOLUMEs given)")
    args = ap.parse_args(argv)

    if args.codecs in ("all", ""):
        codecs = list(classical.CODECS)
    elif args.codecs == "none":
        codecs = []
    else:
        codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
        bad = [c for c in codecs if c not in classical.CODECS]
        if bad:
            ap.error(f"unknown codec(s) {', '.join(bad)} (known: {', '.join(classical.CODECS)})")
    device = args.device or ("cpu" if args.quick else "auto")
    if args.inrv_presets is None:
        try:
            inrv_points = default_inrv_points(args.quick)
        except ImportError as e:
            print(f"rd.py: inrv not importable ({e}); skipping inrv", file=sys.stderr)
            inrv_points = []
    else:
        try:
            inrv_points = [parse_inrv_point(s) for s in args.inrv_presets]
        except ValueError as e:
            ap.error(str(e))
    for preset, ov in inrv_points:   # typos fail now, not after an hour of codecs
        try:
            from inrv.codec.config import make_config

            make_config(preset, **ov)
        except ImportError:
            break
        except Exception as e:  # noqa: BLE001 - UsageError and friends: one line
            ap.error(f"--inrv-presets {preset}: {e}")

    os.makedirs(args.out, exist_ok=True)
    rows: list[Row] = []
    volumes: dict[str, dict] = {}
    for src in args.volumes:
        name = volumes_by_name.display_name(src)      # mni_t1 = the nilearn template (benchmarks/volumes.py)
        try:
            ref = load_volume(volumes_by_name.resolve(src))
        except Exception as e:  # noqa: BLE001 - InputError, FormatError, OSError: one line, exit 2
            ap.error(f"cannot read {src}: {e}")
        fg = metrics.foreground_mask(ref)
        volumes[name] = {"shape": "×".join(map(str, ref.shape)), "dtype": ref.dtype.name, "voxels": ref.size,
                         "range": f"{ref.min()}…{ref.max()}", "fg": float(fg.mean())}
        if args.from_csv:
            continue
        for codec in codecs:
            c = classical.CODECS[codec]
            if not classical.available(codec):
                rows.append(Row(name, codec, c.label, c.kind, "", note="not available in this imagecodecs build"))
                continue
            t0 = time.perf_counter()
            try:
                got = run_classical(name, ref, codec, args.quick, not args.no_ssim)
            except classical.Unsupported as e:
                rows.append(Row(name, codec, c.label, c.kind, "", note=str(e)))
                continue
            except Exception as e:  # noqa: BLE001 - one broken codec must not lose the whole run
                traceback.print_exc()
                rows.append(Row(name, codec, c.label, c.kind, "", note=f"failed: {type(e).__name__}: {e}"))
                continue
            rows += got
            print(f"{name} {codec}: {len(got)} points, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for preset, ov in inrv_points:
            t0 = time.perf_counter()
            try:
                row = run_inrv_point(volumes_by_name.resolve(src), ref, name, preset, ov,
                                     None if device == "auto" else device,
                                     not args.no_ssim)
            except (ImportError, ModuleNotFoundError) as e:
                rows.append(Row(name, _curve_id(preset, ov), f"inrv {preset}", "inrv", "",
                                note=f"inrv not ready: {e}"))
                print(f"{name} inrv {preset}: skipped ({e})", file=sys.stderr)
                continue
            except Exception as e:  # noqa: BLE001 - InrvError (e.g. DeviceError) or a model bug: keep going
                traceback.print_exc()
                rows.append(Row(name, _curve_id(preset, ov), f"inrv {preset}", "inrv", "",
                                note=f"failed: {type(e).__name__}: {e}"))
                continue
            rows.append(row)
            print(f"{name} inrv {preset} {ov}: {row.bpv:.3f} bpv {row.psnr:.2f} dB "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)

    if args.from_csv:
        rows = [r for r in read_csv(args.from_csv) if r.volume in volumes]
    write_csv(rows, os.path.join(args.out, "rd.csv"))
    plots = {v: plot(rows, v, args.out) for v in volumes}
    meta = {"date (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/rd.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_gpu_name()}",
            "inrv device": _device_name(None if device == "auto" else device) if inrv_points else "–",
            "classical codecs": "CPU, single thread where the codec has a thread option",
            "mode": "quick (reduced sweep)" if args.quick else "full"}
    if args.from_csv:
        meta = {"redrawn": f"{meta['date (UTC)']} from {args.from_csv} (date, machine and device of that run: "
                           "see where it came from)"}
    with open(os.path.join(args.out, "rd.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown(rows, volumes, meta, plots) + "\n")
    print(f"wrote {args.out}/rd.csv, rd.md and {sum(len(p) for p in plots.values())} plots", file=sys.stderr)
    return 0


def _gpu_name() -> str:
    torch = _torch_if_cuda()
    return torch.cuda.get_device_name(0) if torch is not None else "no GPU"


if __name__ == "__main__":
    sys.exit(main())
