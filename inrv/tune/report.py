"""The report of ``inrv tune``: ``tune.json``, ``tune.md``, ``cells.csv`` (+ the plots of ``plots.py``)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable

CSV_COLUMNS = ["name", "model", "status", "ds", "nc", "sn", "levels", "channels", "width", "lmbda", "params",
               "bytes", "bpv", "cr_paper", "psnr", "ssim", "max_abs_err", "seconds", "train_seconds", "device",
               "file", "error"]


def write_report(out: Path, report: dict[str, Any], records: list[dict], curve: list[dict], *, plots: bool = True,
                 log: Callable[[str], None] = lambda m: None) -> None:
    t = report.pop("_tradeoff")
    report["plots"] = []
    if plots:
        try:
            from .plots import marginals_plot, pareto_plot
        except ImportError:
            log("inrv tune: matplotlib is not installed: no plots (pip install 'inrv[plot]')")
        else:
            marginals_plot(t, out / "marginals.png", model=report["model"])
            pareto_plot(records, curve, report, out / "pareto.png")
            report["plots"] = ["marginals.png", "pareto.png"]
    with open(out / "cells.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in list(records) + list(curve):
            w.writerow({**{k: r.get(k) for k in CSV_COLUMNS}, **r.get("point", {})})
    _atomic(out / "tune.json", json.dumps(report, indent=1, default=str) + "\n")
    _atomic(out / "tune.md", markdown(report, records, curve))


def _atomic(path: Path, text: str) -> None:
    import os

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{nd}f}"
    return str(v)


def markdown(report: dict[str, Any], records: list[dict], curve: list[dict]) -> str:
    p = report["point"]
    ch = report["choice"]
    model = report["model"]
    s = report["settings"]
    lines = [f"# inrv tune: `{Path(report['input']).name}` ({model} model)", "",
             f"{report['date']}; inrv {report['inrv']}; {report['machine']}; device {report['device']}.",
             f"Settings: preset `{s['preset']}`, {s['steps']} steps per cell"
             + (f", {s['prefit']} SIREN pre-fit steps, {s['points']} query points per step" if model == "paper" else
                f", rate target {s['target_bpv']} bpv (cells more than "
                f"{100 * report['eq8']['rate_tolerance']:.0f} % over it are not eligible)")
             + f", seed {s['seed']}. {report['cells_ok']} of {report['cells_in_grid']} grid cells fitted"
             + (f" ({report['cells_failed']} failed, see cells.csv)" if report["cells_failed"] else "") + ".", "",
             "## Trade-off point (Eq. 8)", "",
             "| " + " | ".join(f"{k}" for k in ch if k != "model") + " | PSNR dB | SSIM | paper CR % | real bpv | bytes |"
             " params | L | f |",
             "|" + "---|" * (len(ch) - 1 + 8),
             "| " + " | ".join(_f(v) for k, v in ch.items() if k != "model")
             + f" | {_f(p['psnr'], 2)} | {_f(p['ssim'])} | {_f(None if p['cr_paper'] is None else 100 * p['cr_paper'], 2)}"
               f" | {_f(p['bpv'])} | {p['bytes']} | {p['params']} | {_f(p['L'], 4)} | {_f(p['f'], 4)} |", "",
             f"Eq. 8: L = 1/PSNR + (1 - |SSIM|)" + (" + (1 - CR)" if model == "paper" else "")
             + f" - sum alpha_i c_i + beta/2 sum c_i^2 with alpha = {report['eq8']['alpha']}, "
               f"beta = {report['eq8']['beta']}; c_i = {report['eq8']['constraints']}.", ""]
    if report.get("encode_args"):
        lines += ["Encode with it:", "", "```", "inrv encode " + Path(report["input"]).name + " "
                  + " ".join(report["encode_args"]) + " -o out.inrv", "```", ""]
    else:
        lines += ["Encode with it: `inrv tune ... --apply OUT.inrv`, or in Python "
                  f"`inrv.encode(vol, 'latent', {', '.join(f'{k}={v}' for k, v in ch.items() if k != 'model')})`.", ""]
    lines += ["## Marginals (Eq. 9: mean over the other axes; the paper's Table 7 and Figs 3-5)", "",
              "| at | " + " | ".join(report["marginals_at_point"][next(iter(report["marginals_at_point"]))]) + " |",
              "|---|" + "---|" * len(report["marginals_at_point"][next(iter(report["marginals_at_point"]))])]
    for ax, vals in report["marginals_at_point"].items():
        lines.append(f"| {ax} = {report['point'][ax]} | " + " | ".join(_f(v, 5) for v in vals.values()) + " |")
    lines += ["", "## Every cell", "",
              "| cell | PSNR dB | SSIM | paper CR % | real bpv | params | seconds | status |", "|---|---|---|---|---|---|---|---|"]
    front = set(report.get("pareto", []))
    for r in records + curve:
        star = " (Pareto)" if r["name"] in front else ""
        lines.append(f"| {r['name']}{star} | {_f(r.get('psnr'), 2)} | {_f(r.get('ssim'))} | "
                     f"{_f(None if r.get('cr_paper') is None else 100 * r['cr_paper'], 2)} | {_f(r.get('bpv'))} | "
                     f"{_f(r.get('params'))} | {_f(r.get('seconds'), 1)} | {r.get('status')}"
                     + (f": {r.get('error')}" if r.get("status") != "ok" else "") + " |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
