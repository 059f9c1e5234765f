"""Grids of configurations, and fitting every cell of one (resumably), for ``inrv tune``.

A cell is fitted with the public API (:func:`inrv.compress`), so what it measures is what a user gets:
PSNR and 3D SSIM of the decoded volume after restoring its dtype (peak = data range), the real bits per
voxel of the stored ``.inrv`` file, and the paper's CR = 1 - params / voxels beside it.

Each finished cell leaves ``cells/<name>.json`` (and its ``.inrv``) in the output folder. A rerun
reads them back and fits only the missing cells; a cell whose recorded settings (input file, steps,
pre-fit, query points, seed, preset, rate target, inrv version) differ from the run's is fitted again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError

# the grid axes of each model family: axis name -> (config field, default values, allowed check)
PAPER_AXES = {"ds": "ds", "nc": "nc", "sn": "sn"}
LATENT_AXES = {"levels": "levels", "channels": "channels", "width": "synth_width"}

# Defaults: sized so that `inrv tune` on a 64^3 volume finishes in well under an hour on a CPU (measured:
# docs/model-paper.md); the paper's grid is ds=2,4,8 nc=4,8,16 sn=30:230:20 at 5000 steps (a GPU's job).
DEFAULT_PAPER_GRID = {"ds": [2, 4, 8], "nc": [4, 8, 16], "sn": [30, 70, 130]}
DEFAULT_LATENT_GRID = {"levels": [5, 7], "channels": [1, 2], "width": [8, 16]}
_ALIASES = {"synth_width": "width", "neurons": "sn", "channels_sr": "nc"}

Progress = Callable[[int, int, dict], None]


def parse_grid(tokens: list[str] | tuple[str, ...], model: str = "paper") -> dict[str, list[int]]:
    """``["ds=2,4,8", "nc=4,8,16", "sn=30:230:20"]`` (or one string with spaces) -> ``{"ds": [2, 4, 8], ...}``.

    Axes not named keep their defaults. Values are positive integers, a list ``a,b,c`` or an inclusive
    range ``a:b:step``; DS also accepts ``1/2``. Each axis is returned sorted and without duplicates.
    Raises :class:`~inrv.errors.UsageError` with a one-line message on a bad grid."""
    known = PAPER_AXES if model == "paper" else LATENT_AXES
    grid = {k: list(v) for k, v in (DEFAULT_PAPER_GRID if model == "paper" else DEFAULT_LATENT_GRID).items()}
    seen: set[str] = set()
    parts = [p for t in tokens for p in str(t).replace(";", " ").split()]
    for part in parts:
        if "=" not in part:
            raise UsageError(f"bad grid entry {part!r}: use AXIS=V1,V2,... (axes: {', '.join(known)})")
        name, _, vals = part.partition("=")
        name = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in known:
            raise UsageError(f"unknown grid axis {name!r} for the {model} model (axes: {', '.join(known)})")
        if name in seen:
            raise UsageError(f"grid axis {name!r} given twice")
        seen.add(name)
        grid[name] = _values(name, vals)
    n = math.prod(len(v) for v in grid.values())
    if n > 4096:
        raise UsageError(f"the grid has {n} cells; at most 4096")
    return grid


def _values(name: str, text: str) -> list[int]:
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UsageError(f"grid axis {name}: empty value in {text!r}")
        try:
            if ":" in item:
                a, b, *st = (int(v) for v in item.split(":"))
                step = st[0] if st else 1
                if len(st) > 1 or step < 1 or b < a:
                    raise ValueError
                out += list(range(a, b + 1, step))
            elif name == "ds" and item.startswith("1/"):
                out.append(int(item[2:]))
            else:
                out.append(int(item))
        except ValueError:
            raise UsageError(f"grid axis {name}: {item!r} is not a positive integer, a list a,b,c "
                             f"or a range a:b:step") from None
    if any(v < 1 for v in out):
        raise UsageError(f"grid axis {name}: values must be positive, got {text!r}")
    if name == "ds" and any(v not in (1, 2, 4, 8) for v in out):
        raise UsageError(f"grid axis ds: factors must be 1, 2, 4 or 8 (scale 1, 1/2, 1/4, 1/8), got {text!r}")
    if name == "levels" and any(v > 12 for v in out):
        raise UsageError(f"grid axis levels: at most 12 levels, got {text!r}")
    if len(out) > 64:
        raise UsageError(f"grid axis {name}: at most 64 values, got {len(out)}")
    return sorted(set(out))


def cell_name(model: str, point: dict[str, int]) -> str:
    return model + "-" + "-".join(f"{k}{v}" for k, v in point.items())


def input_fingerprint(path: Path) -> str:
    """sha256 of the input file (of the names, sizes and bytes of a folder's files)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path) if p != path else p.name).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class Cell:
    name: str
    model: str
    point: dict[str, int]        # grid coordinates (axis name -> value)
    overrides: dict[str, Any]    # config field overrides for this cell
    units: int                   # progress units (training steps) it reports


@dataclass
class RunSettings:
    """What a cell's result depends on besides its grid point (compared on resume)."""

    preset: str
    steps: int | None
    prefit: int | None
    points: int | None
    seed: int
    target_bpv: float | None
    input_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from .. import __version__

        d = {"preset": self.preset, "steps": self.steps, "prefit": self.prefit, "points": self.points,
             "seed": self.seed, "target_bpv": self.target_bpv, "input_sha256": self.input_sha256,
             "inrv": __version__}
        d.update(self.extra)
        return d


def _product_cells(model: str, grid: dict[str, list[int]], axes: tuple[str, ...], overrides, units: int) -> list[Cell]:
    """One cell per point of the product of ``grid``'s ``axes`` (in that nesting order); ``overrides(point)``
    gives the config overrides of a point (None values dropped)."""
    import itertools

    cells = []
    for values in itertools.product(*(grid[a] for a in axes)):
        point = dict(zip(axes, values))
        ov = overrides(point)
        cells.append(Cell(cell_name(model, point), model, point, {k: v for k, v in ov.items() if v is not None},
                          units))
    return cells


def paper_cells(grid: dict[str, list[int]], s: RunSettings) -> list[Cell]:
    from ..codec.config import make_config

    base = make_config(s.preset, steps=s.steps)
    return _product_cells("paper", grid, ("ds", "nc", "sn"),
                          lambda p: {**p, "steps": s.steps, "lr_prefit_steps": s.prefit,
                                     "points_per_step": s.points, "seed": s.seed}, base.steps)


def latent_cells(grid: dict[str, list[int]], s: RunSettings) -> list[Cell]:
    from ..codec.config import make_config

    base = make_config(s.preset, steps=s.steps)
    units = base.steps * (1 + (base.search_iters if s.target_bpv else 0))
    return _product_cells("latent", grid, ("levels", "channels", "width"),
                          lambda p: {"levels": p["levels"], "channels": p["channels"], "synth_width": p["width"],
                                     "steps": s.steps, "seed": s.seed, "target_bpv": s.target_bpv,
                                     **s.extra.get("latent_overrides", {})}, units)


def latent_curve_cells(lambdas: list[float], preset: str, steps: int | None, seed: int) -> list[Cell]:
    from ..codec.config import make_config

    base = make_config(preset, steps=steps)
    return [Cell(f"latent-curve-lmbda{lam:g}", "latent", {"lmbda": lam},
                 {k: v for k, v in {"lmbda": lam, "steps": steps, "seed": seed}.items() if v is not None},
                 base.steps) for lam in lambdas]


def _load_cached(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("settings") != settings or rec.get("status") != "ok":
        return None
    return rec


def run_cells(src: Path, cells: list[Cell], settings: RunSettings, out: Path, *, preset: str,
              device: str | None = None, progress: Progress | None = None,
              log: Callable[[str], None] = lambda m: None, fit: bool = True) -> list[dict[str, Any]]:
    """Fit every cell not already finished in ``out/cells``; return one record per cell (in order).

    ``progress(done, total, info)`` is called with training steps over the whole grid (finished cells
    count as done). A cell that fails (e.g. a configuration the volume cannot take) is recorded with
    ``status="failed"`` and its error, and the run goes on. ``fit=False``: only read the finished cells
    (the others are left out of the result)."""
    import inrv

    cdir = out / "cells"
    cdir.mkdir(parents=True, exist_ok=True)
    sdict = settings.as_dict()
    records: list[dict[str, Any] | None] = []
    for c in cells:
        rec = _load_cached(cdir / f"{c.name}.json", {**sdict, "preset": preset})
        records.append(rec)
    total = sum(c.units for c in cells)
    done = sum(c.units for c, r in zip(cells, records) if r is not None)
    skipped = sum(r is not None for r in records)
    if skipped:
        log(f"inrv tune: {skipped} of {len(cells)} cells already done in {cdir}, skipped")
    if progress:
        progress(done, total, {})
    for i, (c, rec) in enumerate(zip(cells, records)):
        if rec is not None:
            continue
        if not fit:
            log(f"inrv tune: cell {c.name} not fitted yet: left out")
            continue
        rec = _load_cached(cdir / f"{c.name}.json", {**sdict, "preset": preset})
        if rec is not None:     # finished meanwhile by another run sharing this folder
            records[i] = rec
            done += c.units
            continue
        base = done

        def cell_progress(step: int, steps: int, info: dict, _b=base, _u=c.units, _c=c) -> None:
            if progress and steps:
                frac = min(1.0, step / steps)
                progress(_b + int(frac * _u) if _u else _b, total, {"cell": _c.name, **info})

        dst = cdir / f"{c.name}.inrv"
        t0 = time.perf_counter()
        rec = {"name": c.name, "model": c.model, "point": c.point, "overrides": c.overrides,
               "settings": {**sdict, "preset": preset}}
        try:
            summary = _info_dict(inrv.compress(src, dst, preset, device=device, progress=cell_progress,
                                               force=True, **c.overrides))
            m = summary.get("metrics") or {}
            voxels = int(summary["voxels"])
            params = m.get("params")
            rec.update(status="ok", psnr=_num(m.get("psnr")), ssim=_num(m.get("ssim")),
                       max_abs_err=_num(m.get("max_abs_err")), params=params,
                       cr_paper=(1.0 - params / voxels) if params else None,
                       bytes=int(summary["file_bytes"]), bpv=float(summary["bpv"]), voxels=voxels,
                       seconds=time.perf_counter() - t0, train_seconds=_num(m.get("train_seconds")),
                       device=m.get("device"), file=str(dst.relative_to(out)),
                       config={k: v for k, v in summary.get("config", {}).items() if k != "quant"})
            if summary.get("model") != c.model or (summary.get("config") or {}).get("fallback"):
                # inrv.compress stored the lossless coding instead (smaller than this model's file): the
                # cell says nothing about the model, so it is reported but left out of Eq. 8
                rec.update(status="fallback", error=f"stored as {summary.get('model')} (smaller than the "
                           f"{c.model} model's file)")
        except Exception as exc:  # noqa: BLE001 - one failed cell must not end a long grid run
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
            log(f"inrv tune: cell {c.name} failed: {rec['error']}")
        _write_json(cdir / f"{c.name}.json", rec)
        records[i] = rec
        done += c.units
        if progress:
            progress(done, total, {"cell": c.name})
    return [r for r in records if r is not None]


def _info_dict(summary: Any) -> dict[str, Any]:
    """The ``inrv info`` document of a compress result (a dict, or a ``Summary`` with ``details``)."""
    if isinstance(summary, dict):
        return summary
    details = getattr(summary, "details", None)
    return dict(details) if details else dict(summary.to_dict())


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if not math.isnan(v) else None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_default) + "\n")
    os.replace(tmp, path)


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
