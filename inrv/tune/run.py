"""``inrv.tune.tune``: fit a grid of configurations of one volume, apply the trade-off point method, report.

    from inrv.tune import tune
    report = tune("scan.nii.gz", "tune_out")                       # the paper model, default grid
    report["choice"]          # {"model": "paper", "ds": 2, "nc": 4, "sn": 30}

Writes into ``out``: ``cells/`` (one ``.json`` + ``.inrv`` per cell, for resuming), ``cells.csv``,
``tune.json``, ``tune.md`` and, when matplotlib is installed, ``marginals.png`` and ``pareto.png``.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, RunError, UsageError
from . import grid as G
from .tradeoff import DEFAULT_ALPHA, DEFAULT_BETA, pareto_front, trade_off

DEFAULT_STEPS = {"paper": 30, "latent": 200}
DEFAULT_PREFIT = 50
DEFAULT_POINTS = 8192
DEFAULT_LATENT_LAMBDAS = (3e-3, 1e-3, 3e-4)
DEFAULT_TARGET_BPV = 0.5
RATE_TOLERANCE = 0.10   # latent tuning: cells more than 10 % over the rate target are not eligible


def tune(src: str | Path, out: str | Path, *, model: str = "paper", grid: dict[str, list[int]] | None = None,
         steps: int | None = None, prefit: int | None = DEFAULT_PREFIT, points: int | None = DEFAULT_POINTS,
         seed: int = 0, preset: str | None = None, alpha: float | tuple[float, ...] = DEFAULT_ALPHA,
         beta: float | None = None, target_bpv: float | None = None,
         latent_lambdas: tuple[float, ...] | None = DEFAULT_LATENT_LAMBDAS, latent_preset: str = "fast",
         latent_steps: int | None = None, device: str | None = None,
         progress: Callable[[int, int, dict], None] | None = None,
         log: Callable[[str], None] = lambda m: None, plots: bool = True, fit: bool = True) -> dict[str, Any]:
    """Run the grid (resuming from ``out/cells``), evaluate Eq. 8 and write the report. Returns it (the
    ``tune.json`` document). ``fit=False``: report on the cells already finished in ``out`` only."""
    src = Path(src)
    out = Path(out)
    if not src.exists():
        raise InputError(f"{src}: no such file or directory")
    if model not in ("paper", "latent"):
        raise UsageError(f"inrv tune: unknown model {model!r} (paper or latent)")
    grid = grid or G.parse_grid([], model)
    steps = steps if steps is not None else DEFAULT_STEPS[model]
    preset = preset or ("paper" if model == "paper" else "fast")
    from ..codec.config import make_config

    if make_config(preset).model != model:
        raise UsageError(f"preset {preset!r} is not a {model} preset")
    if beta is None:   # at a rate target the size penalty would only trade quality for decode speed
        beta = DEFAULT_BETA if model == "paper" else 0.0
    if model == "latent":
        target_bpv = DEFAULT_TARGET_BPV if target_bpv is None else target_bpv
        prefit = points = None
    sha = G.input_fingerprint(src)
    settings = G.RunSettings(preset=preset, steps=steps, prefit=prefit, points=points, seed=seed,
                             target_bpv=target_bpv if model == "latent" else None, input_sha256=sha)
    cells = G.paper_cells(grid, settings) if model == "paper" else G.latent_cells(grid, settings)
    curve_cells: list[G.Cell] = []
    curve_settings = None
    if latent_lambdas:
        curve_settings = G.RunSettings(preset=latent_preset, steps=latent_steps, prefit=None, points=None,
                                       seed=seed, target_bpv=None, input_sha256=sha)
        curve_cells = G.latent_curve_cells(list(latent_lambdas), latent_preset, latent_steps, seed)
    log(f"inrv tune: {src.name}: {len(cells)} {model} cells ({' x '.join(f'{k} {v}' for k, v in grid.items())}), "
        f"{steps} steps each" + (f", + {len(curve_cells)} latent-curve fits" if curve_cells else "") + f" -> {out}")

    total_units = sum(c.units for c in cells) + sum(c.units for c in curve_cells)

    def shifted(offset: int) -> Callable[[int, int, dict], None] | None:
        if progress is None:
            return None
        return lambda done, _total, info: progress(offset + done, total_units, info)

    records = G.run_cells(src, cells, settings, out, preset=preset, device=device, progress=shifted(0), log=log,
                           fit=fit)
    curve = G.run_cells(src, curve_cells, curve_settings, out, preset=latent_preset, device=device,
                        progress=shifted(sum(c.units for c in cells)), log=log, fit=fit) if curve_cells else []
    report = build_report(src, out, model, grid, records, curve, settings, alpha=alpha, beta=beta)
    from .report import write_report

    write_report(out, report, records, curve, plots=plots, log=log)
    return report


def _array(records: list[dict], grid: dict[str, list[int]], key: str) -> np.ndarray:
    shape = tuple(len(v) for v in grid.values())
    arr = np.full(shape, np.nan)
    pos = {name: {v: i for i, v in enumerate(vals)} for name, vals in grid.items()}
    for r in records:
        if r.get("status") != "ok" or r.get(key) is None:
            continue
        idx = tuple(pos[name][r["point"][name]] for name in grid)
        arr[idx] = float(r[key])
    return arr


def build_report(src: Path, out: Path, model: str, grid: dict[str, list[int]], records: list[dict],
                 curve: list[dict], settings: G.RunSettings, *, alpha, beta) -> dict[str, Any]:
    """Eq. 8 over the measured cells and everything the report, the plots and ``--json`` need."""
    psnr = _array(records, grid, "psnr")
    ssim = _array(records, grid, "ssim")
    if model == "paper":
        cr = _array(records, grid, "cr_paper")
    else:   # at a rate target the CR term is constant; cells over the target are not eligible
        cr = None
        bpv = _array(records, grid, "bpv")
        over = bpv > settings.target_bpv * (1 + RATE_TOLERANCE)
        psnr = np.where(over, np.nan, psnr)
        ssim = np.where(over, np.nan, ssim)
    try:
        t = trade_off(grid, psnr, ssim, cr, alpha=alpha, beta=beta)
    except ValueError as exc:
        raise RunError(f"inrv tune: no usable cell ({exc}); see {out / 'cells'}") from None
    best = next(r for r in records if r.get("status") == "ok" and
                all(r["point"][k] == v for k, v in t.point.items()))
    if model == "paper":
        choice = {"model": "paper", "ds": t.point["ds"], "nc": t.point["nc"], "sn": t.point["sn"]}
        encode_args = ["--model", "paper", "--ds", str(choice["ds"]), "--nc", str(choice["nc"]),
                       "--sn", str(choice["sn"])]
    else:
        choice = {"model": "latent", "levels": t.point["levels"], "channels": t.point["channels"],
                  "synth_width": t.point["width"], "target_bpv": settings.target_bpv}
        encode_args = None   # `inrv encode` has no flags for the latent sizes: use --apply or the Python API
    axes = list(grid)
    marg = {ax: {k: _clean(v) for k, v in t.marginals(ax).items()} for ax in axes}
    at_point = {ax: {k: _clean(v[grid[ax].index(t.point[ax])]) for k, v in t.marginals(ax).items()}
                for ax in axes}
    ok = [r for r in records if r.get("status") == "ok"]
    front = pareto_front([r["bpv"] for r in ok], [r["psnr"] for r in ok])
    import inrv

    return {
        "schema": "inrv-tune/1",
        "input": str(src), "input_sha256": settings.input_sha256, "model": model, "out": str(out),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
                   f"python {platform.python_version()}, {_cpus()} CPUs",
        "inrv": inrv.__version__,
        "device": next((r.get("device") for r in ok if r.get("device")), None),
        "grid": grid, "settings": settings.as_dict(),
        "eq8": {"alpha": list(t.alpha), "beta": t.beta, "terms": list(t.terms),
                "constraints": "rank along each axis / (length - 1), 0 at the cheapest value",
                "rate_tolerance": RATE_TOLERANCE if model == "latent" else None},
        "choice": choice, "encode_args": encode_args,
        "point": {**t.point, "index": list(t.index), "L": float(t.lagrangian[t.index]),
                  "f": float(t.objective[t.index]),
                  **{k: best.get(k) for k in ("psnr", "ssim", "cr_paper", "bpv", "bytes", "params", "seconds")}},
        "marginals": marg, "marginals_at_point": at_point,
        "cells": len(records), "cells_ok": len(ok), "cells_failed": len(records) - len(ok),
        "cells_in_grid": int(np.prod([len(v) for v in grid.values()])),
        "pareto": [ok[i]["name"] for i in front],
        "latent_curve": [{k: r.get(k) for k in ("name", "point", "psnr", "ssim", "bpv", "bytes", "status")}
                         for r in curve],
        "latent_curve_steps": next((r["settings"].get("steps") for r in curve if r.get("settings")), None),
        "_tradeoff": t,     # not serialised (dropped by write_report)
    }


def _clean(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_clean(x) for x in v.tolist()]
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
