"""``inrv tune``: the paper's trade-off point method (a thin layer over :func:`inrv.tune.tune`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from ..errors import InputError, UsageError
from .options import ProgressBar, device_option, force_option, json_option, log, progress_enabled, \
    progress_option, verbosity_options

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a comma-separated list of numbers") from None
    if not vals:
        raise UsageError(f"{what}: empty list")
    return vals


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("src", metavar="IN", type=click.Path(path_type=Path))
@click.argument("grid_tokens", metavar="[AXIS=V,...]...", nargs=-1)
@click.option("--grid", "grid_opts", multiple=True, metavar="AXIS=V,...",
              help="Grid axis values, e.g. --grid ds=2,4,8 nc=4,8,16 sn=30:230:20 (paper: ds nc sn; "
                   "latent: levels channels width). Default paper: ds=2,4,8 nc=4,8,16 sn=30,70,130.")
@click.option("--model", type=click.Choice(["paper", "latent"]), default="paper", show_default=True,
              help="Which family to tune: the paper model's DS/NC/SN, or the latent model's sizes at --bpv.")
@click.option("--steps", "--epochs", "steps", type=click.IntRange(min=1), default=None,
              help="Training steps per cell (default: 30 paper, 200 latent: a CPU scale; the paper trained 5000).")
@click.option("--prefit", type=click.IntRange(min=0), default=50, show_default=True,
              help="paper: SIREN-only pre-fit steps on the low-res volume per cell.")
@click.option("--points", type=click.IntRange(min=1), default=8192, show_default=True,
              help="paper: random query voxels per training step.")
@click.option("--preset", default=None, help="Base preset of the cells (default: paper / fast).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bpv", type=click.FloatRange(min=0, min_open=True), default=None, metavar="BITS",
              help="latent: the rate target every cell is fitted to (default 0.5).")
@click.option("--alpha", default="0", show_default=True, metavar="A[,A,A]",
              help="Eq. 8 Lagrange factors (one per axis, or one for all).")
@click.option("--beta", type=float, default=None,
              help="Eq. 8 penalty parameter (default 0.1 for paper, 0 for latent).")
@click.option("--latent-curve", "latent_curve", default="3e-3,1e-3,3e-4", show_default=True,
              metavar="L,L,...", help="Rate weights of the latent model fitted for the Pareto plot ('none': skip).")
@click.option("--latent-preset", default="fast", show_default=True, help="Preset of the latent-curve fits.")
@click.option("--latent-steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Steps of each latent-curve fit.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Report folder (default: IN's name + '.tune'); a rerun there skips finished cells.")
@click.option("--apply", "apply_to", type=click.Path(path_type=Path), default=None, metavar="OUT.inrv",
              help="Also write the trade-off cell's .inrv (fitted at --steps) to OUT.inrv; with "
                   "--apply-steps N, encode IN again with the chosen configuration at N steps.")
@click.option("--apply-steps", type=click.IntRange(min=1), default=None, help="Steps of the --apply encode.")
@click.option("--no-plots", is_flag=True, help="Skip the pictures (they need matplotlib).")
@click.option("--no-fit", is_flag=True,
              help="Fit nothing: report on the cells already finished in --out (e.g. of an interrupted run).")
@device_option
@force_option
@json_option
@progress_option
@verbosity_options
def tune(src: Path, grid_tokens: tuple[str, ...], grid_opts: tuple[str, ...], model: str, steps: int | None,
         prefit: int, points: int, preset: str | None, seed: int, bpv: float | None, alpha: str,
         beta: float | None,
         latent_curve: str, latent_preset: str, latent_steps: int, out: Path | None, apply_to: Path | None,
         apply_steps: int | None, no_plots: bool, no_fit: bool, device: str | None, force: bool, as_json: bool,
         progress: bool | None) -> None:
    """Find the paper's trade-off point for a volume IN: fit every grid cell, evaluate Eq. 8, report.

    Writes OUT/tune.md, tune.json, cells.csv, marginals.png and pareto.png (and cells/, which lets a rerun
    skip finished cells). With --json, prints the chosen configuration on stdout.

    \b
      inrv tune scan.nii.gz                                   default grid (27 cells) at CPU scale
      inrv tune scan.nii.gz --grid ds=2,4 nc=4,8 sn=30,50 --steps 200 -o t/
      inrv tune scan.nii.gz --json | jq -r '.encode_args | join(" ")'
      inrv tune scan.nii.gz --model latent --bpv 0.5 --apply scan.inrv
    """
    from ..codec.config import PRESETS
    from ..tune.grid import parse_grid
    from ..tune.run import tune as run_tune

    grid = parse_grid(list(grid_opts) + list(grid_tokens), model)      # usage errors before any work
    alphas = _floats(alpha, "--alpha")
    if len(alphas) not in (1, len(grid)):
        raise UsageError(f"--alpha: give one value or {len(grid)}, got {len(alphas)}")
    lambdas = None if latent_curve.strip().lower() in ("none", "", "0") else _floats(latent_curve, "--latent-curve")
    if lambdas and any(v <= 0 for v in lambdas):
        raise UsageError("--latent-curve: rate weights must be positive")
    for name in (preset, latent_preset):
        if name is not None and name not in PRESETS:
            raise UsageError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    if bpv is not None and model != "latent":
        raise UsageError("--bpv applies to --model latent (the paper model has no rate target)")
    if apply_steps is not None and apply_to is None:
        raise UsageError("--apply-steps needs --apply OUT.inrv")
    if not src.exists():
        raise InputError(f"{src}: no such file or directory")
    if apply_to is not None and apply_to.exists() and not force:
        raise UsageError(f"{apply_to} exists (use -f to overwrite)")
    out = out or src.with_name(src.name.split(".")[0] + ".tune")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if device:
        from ..codec.device import resolve_device

        resolve_device(device)
    with ProgressBar(desc=f"tune {src.name}", enabled=progress_enabled(progress)) as bar:
        report = run_tune(src, out, model=model, grid=grid, steps=steps, prefit=prefit, points=points, seed=seed,
                          preset=preset, alpha=alphas if len(alphas) > 1 else alphas[0], beta=beta,
                          target_bpv=bpv, latent_lambdas=lambdas, latent_preset=latent_preset,
                          latent_steps=latent_steps, device=device, progress=bar,
                          log=lambda m: log(m, 1), plots=not no_plots, fit=not no_fit)
    p = report["point"]
    choice = report["choice"]
    applied = None
    if apply_to is not None:
        applied = _apply(src, out, report, apply_to, apply_steps, device, force, progress)
    doc: dict[str, Any] = {**choice, "encode_args": report["encode_args"],
                           "psnr": p["psnr"], "ssim": p["ssim"], "bpv": p["bpv"], "cr_paper": p["cr_paper"],
                           "report": str(out / "tune.md"), "applied": applied}
    if as_json:
        click.echo(json.dumps(doc, default=str))
    else:
        what = ", ".join(f"{k} {v}" for k, v in choice.items() if k != "model")
        log(f"inrv tune: trade-off point {what}: PSNR {p['psnr']:.2f} dB, SSIM {p['ssim']:.3f}, "
            f"{p['bpv']:.3f} bpv ({report['cells_ok']}/{report['cells']} cells); report {out / 'tune.md'}")
        if report["encode_args"]:
            log(f"  inrv encode {src} {' '.join(report['encode_args'])}")
        if applied:
            log(f"  wrote {applied}")


def _apply(src: Path, out: Path, report: dict, dst: Path, steps: int | None, device: str | None, force: bool,
           progress: bool | None) -> str:
    import inrv

    if steps is None:   # the trade-off cell's own fit: copy its file
        name = "-".join([report["model"]] + [f"{k}{v}" for k, v in report["point"].items()
                                            if k in report["grid"]])
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(out / "cells" / f"{name}.inrv", tmp)
        tmp.replace(dst)
        return str(dst)
    choice = {k: v for k, v in report["choice"].items() if k != "model"}
    preset = report["settings"]["preset"]
    extra = {"lr_prefit_steps": report["settings"]["prefit"], "points_per_step": report["settings"]["points"]} \
        if report["model"] == "paper" else {}
    with ProgressBar(desc=f"apply {dst.name}", enabled=progress_enabled(progress)) as bar:
        inrv.compress(src, dst, preset, device=device, progress=bar, force=force, steps=steps,
                      seed=report["settings"]["seed"], **choice, **{k: v for k, v in extra.items() if v is not None})
    return str(dst)
