"""The ``inrv`` command: ``encode``, ``decode``, ``info`` and ``batch`` (the ``cli/batch/`` package).

A thin click layer over the public API (:func:`inrv.compress`, :func:`inrv.decompress`, :func:`inrv.info`).
Conventions (zstd / dcm2niix style, see ``docs/cli.md``):

* ``-o`` names the output; ``-f/--force`` is needed to replace an existing one; outputs are written
  atomically (``formats/atomic.py``), the input is never modified.
* progress bar and messages on stderr; stdout carries only ``--json`` documents.
* exit codes: 0 ok, 1 failed run, 2 bad usage or bad input, 8 batch partial failure, 130 Ctrl-C;
  errors are one line ``inrv: error: ...`` (a traceback only with ``-v``).

Importing this module does not import torch (``inrv info`` and ``inrv --version`` stay fast).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..codec.config import family_spec
from ..errors import InputError, RunError, UsageError
from ..formats.discovery import strip_volume_suffix
from .batch import batch
from .compare import check_preview, compare, preview_option, write_preview
from .tree import decode_tree
from .options import (InrvGroup, ProgressBar, build_config, device_option, encoding_options, force_option,
                      json_option, log, progress_enabled, progress_option, report_error, verbosity,
                      verbosity_options)
from .output import decode_summary_line, dumps, encode_summary_line, info_text, make_progress

_T_IMPORT = time.perf_counter()

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# source kind recorded in an .inrv file -> suffix of the default decode output (None: a DICOM folder)
DECODE_SUFFIX = {"nifti1": ".nii.gz", "nifti2": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": None}


def _version_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")  # the installed version, without importing torch
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    click.echo(f"inrv {__version__} (python {sys.version.split()[0]}, torch {torch_version})")
    ctx.exit(0)


@click.group(cls=InrvGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version_callback,
              help="Print the version and exit.")
@verbosity_options
def main() -> None:
    """inrv: a neural codec for 3D medical images (NIfTI, DICOM, NRRD, MHA).

    \b
      inrv encode scan.nii.gz -o scan.inrv     fit a small network, write scan.inrv
      inrv decode scan.inrv -o out.nii.gz      back to a volume (.nii.gz .nrrd .mha, or a DICOM folder)
      inrv info scan.inrv                      what is inside (--json for machines)

    Exit codes: 0 ok, 1 failed run, 2 bad usage or input, 8 batch partial failure, 130 interrupted.
    """


main.add_command(batch)       # the cli/batch/ package: discovery, plan, Dask driver, report
from .tune import tune  # noqa: E402  (inrv tune: the paper's trade-off point method, cli/tune.py)
main.add_command(tune)
main.add_command(compare)     # cli/compare.py (also the picture of encode --preview)


# --------------------------------------------------------------------------- helpers

def _require_input(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")


def _is_dicom_input(path: Path) -> bool:
    """A folder, or a file that sniffs as DICOM: ``inrv info`` lists its series instead of reading .inrv."""
    if path.is_dir():
        return True
    from ..formats.dicom import looks_like_dicom

    return path.is_file() and path.suffix.lower() != ".inrv" and looks_like_dicom(path)


def _refuse_inrv_input(path: Path) -> None:
    """``inrv encode x.inrv`` is almost always a slip for ``inrv decode``: say so."""
    if not path.is_file():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(5)
    except OSError:
        return  # the reader reports it
    if head == b"\x89INRV":
        raise UsageError(f"{path} is already an .inrv file (to restore it: inrv decode {path} -o OUT)")


def _strip_volume_suffix(path: Path) -> Path:
    stripped = strip_volume_suffix(path.name)
    if stripped != path.name:
        return path.with_name(stripped)
    return path.with_name(path.stem) if path.suffix and path.is_file() else path


def default_encode_output(src: Path) -> Path:
    """``scan.nii.gz -> scan.inrv``; a DICOM folder ``series/ -> series.inrv`` beside it."""
    src = Path(str(src).rstrip("/\\") or str(src))
    return _strip_volume_suffix(src).with_name(_strip_volume_suffix(src).name + ".inrv")


def default_decode_output(src: Path, source_kind: str | None) -> Path:
    """``scan.inrv -> scan.nii.gz`` (or ``.nrrd``/``.mha``/a DICOM folder ``scan``, after the original format)."""
    base = src.with_suffix("") if src.suffix.lower() == ".inrv" else src
    suffix = DECODE_SUFFIX.get(source_kind or "", ".nii.gz")
    return base if suffix is None else base.with_name(base.name + suffix)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _check_device(device: str | None) -> None:
    """Fail before any work when the device is not there (DeviceError, exit 2). Imports torch."""
    from ..codec.device import resolve_device

    resolve_device(device)


def _decodes_on_device(model: Any) -> bool:
    """Whether decoding a file of this model family needs a torch device (unknown: assume it does)."""
    spec = family_spec(model)
    return True if spec is None else bool(spec.uses_device)


def _source_kind(info: dict[str, Any]) -> str | None:
    src = info.get("source")
    if isinstance(src, dict):
        kind = src.get("kind")
        return kind if isinstance(kind, str) else None
    return src if isinstance(src, str) else None


# --------------------------------------------------------------------------- encode

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("src", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .inrv file (default: IN with its suffix replaced by .inrv).")
@click.option("--series", default=None, metavar="N|UID",
              help="For a DICOM folder holding several series: the one to encode, by its index in "
                   "`inrv info FOLDER` or its SeriesInstanceUID.")
@encoding_options
@click.option("--model-only", is_flag=True,
              help="With --bpv/--psnr: write the chosen model's file even where the near-lossless coder "
                   "meets the target better (a file larger than lossless is still never written).")
@preview_option
@force_option
@json_option
@progress_option
@verbosity_options
def encode(src: Path, output: Path | None, device: str | None, force: bool, as_json: bool,
           progress: bool | None, keep_private: bool, series: str | None = None, preview: Path | None = None,
           model_only: bool = False, **opts: Any) -> None:
    """Compress a volume IN (NIfTI, NRRD, MHA file or DICOM series folder) into an .inrv file.

    Prints a progress bar while training and a one-line summary (size, bits per voxel, PSNR, SSIM,
    seconds) on stderr, or with --json a JSON document on stdout.

    \b
      inrv encode scan.nii.gz                        -> scan.inrv, the default preset
      inrv encode scan.nii.gz -o s.inrv --preset tiny --epochs 50
      inrv encode ct/ --model latent --bpv 0.5 --json > ct.json
    """
    import inrv

    from ..formats.preflight import INRV_SUFFIX, check_output, check_volume_input

    config = build_config(**opts)                 # usage errors first (exit 2), before any work
    check_volume_input(src)                       # readable, a format we read (no torch yet)
    dst = output if output is not None else default_encode_output(src)
    if _same_path(src, dst):
        raise UsageError(f"the output {dst} is the input; choose another -o")
    check_output(dst, force=force, suffixes=(INRV_SUFFIX,))     # suffix, -f, folder writable: before training
    if family_spec(config.model).uses_device:     # a numpy-only family (nearlossless) needs no torch device
        _check_device(device)
    check_preview(preview, force)
    config = _budget_from_start(config)
    log(f"inrv: {src} -> {dst}: model {config.model}, {config.steps} steps, device {device or 'auto'}", 1)
    log(f"inrv: config {config}", 2)
    with make_progress(src.name, progress_enabled(progress)) as bar:
        summary = inrv.compress(src, dst, config, device=device, progress=bar, force=force,
                                keep_private=keep_private, series=series, best_coder=not model_only)
    if preview is not None:
        write_preview(src, dst, preview, force=force, device=device, series=series)
    if as_json:
        extra = {"preview": str(preview)} if preview is not None else {}
        click.echo(dumps({**summary.to_dict(), "input": str(src), "output": str(dst), **extra}))
    else:
        log(encode_summary_line(src, dst, summary))


def _budget_from_start(config):
    """``--time-budget`` counts the whole command: what the process has spent before the fit starts
    (interpreter, the codec's imports, done here first) and, for reading the volume, the quality check
    and writing the file, a second plus 8 % of the budget come off the fit's share."""
    budget = getattr(config, "time_budget", None)
    if not budget:
        return config
    import dataclasses

    import inrv.codec.latent  # noqa: F401  (torch: imported now so that its cost is counted)
    import inrv.codec.metrics  # noqa: F401

    try:
        import psutil

        spent = time.time() - psutil.Process().create_time()
    except Exception:   # psutil missing or no process table: count from this module's import
        spent = time.perf_counter() - _T_IMPORT
    return dataclasses.replace(config, time_budget=max(0.25 * budget, 0.92 * budget - spent - 1.0))


# --------------------------------------------------------------------------- decode

class ShapeType(click.ParamType):
    """``X,Y,Z`` (or ``XxYxZ``): three positive voxel counts, in the array axis order (x, y, z)."""

    name = "X,Y,Z"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int, int]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).replace("x", ",").replace("X", ",").split(",")]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not three integers like 128,128,96", param, ctx)
        if len(dims) != 3 or any(d < 1 for d in dims):
            self.fail(f"{value!r}: need three positive voxel counts X,Y,Z", param, ctx)
        if any(d > 4096 for d in dims):
            self.fail(f"{value!r}: at most 4096 voxels per axis", param, ctx)
        return dims  # type: ignore[return-value]


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("src", metavar="IN.inrv", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output volume: .nii.gz, .nii, .nrrd, .mha, or a folder (no suffix) for a DICOM series "
                   "(default: IN with .inrv replaced by the original format's suffix). IN a folder written "
                   "by inrv batch: the output folder, the tree decoded and its other files copied.")
@click.option("--shape", type=ShapeType(), default=None,
              help="Render on another grid of X,Y,Z voxels over the same field of view (default: the original).")
@device_option
@force_option
@json_option
@verbosity_options
def decode(src: Path, output: Path | None, shape: tuple[int, int, int] | None, device: str | None, force: bool,
           as_json: bool) -> None:
    """Restore a volume from an .inrv file, with its original dtype, geometry and intensity units.

    \b
      inrv decode scan.inrv -o scan.nii.gz
      inrv decode scan.inrv -o series_dir --device cpu     (a DICOM series)
      inrv decode scan.inrv -o big.nii.gz --shape 256,256,256
      inrv decode compressed/ -o restored/                 (a tree from inrv batch, e.g. a BIDS dataset)
    """
    import inrv

    from ..formats.preflight import check_output

    _require_input(src)
    if src.is_dir():                    # a tree written by inrv batch (cli/tree.py)
        _check_device(device)
        return decode_tree(src, output, shape=shape, device=device, force=force, as_json=as_json)
    facts = inrv.info(src)           # a truncated, corrupt or hostile file is refused here, torch-free
    if output is None:
        output = default_decode_output(src, _source_kind(facts.details))
    if _same_path(src, output):
        raise UsageError(f"the output {output} is the input; choose another -o")
    check_output(output, force=force, folder_ok=True)    # format, -f, folder writable: before decoding
    # a numpy-only family (nearlossless) imports no torch, unless a device other than cpu/auto is named
    if _decodes_on_device(facts.details.get("model")) or (device or "auto").strip().lower() not in ("auto", "cpu"):
        _check_device(device)
    t0 = time.perf_counter()
    try:
        vol = inrv.decompress(src, output, shape=shape, device=device, force=force)
    except MemoryError:   # what the file declares does not fit: not a hint to change devices
        dims = "x".join(str(v) for v in (shape or facts.details.get("shape") or ()))
        raise RunError(f"{src}: out of memory decoding its {dims} volume ({facts.details.get('model')} model): "
                       "a corrupt file, or one too large for this machine") from None
    seconds = time.perf_counter() - t0
    dtype = vol.data.dtype.name
    if as_json:
        click.echo(dumps({"input": str(src), "output": str(output), "shape": list(vol.shape), "dtype": dtype,
                          "spacing": list(vol.geometry.spacing), "seconds": seconds}))
    else:
        log(decode_summary_line(src, output, vol.shape, dtype, seconds))


# --------------------------------------------------------------------------- info

@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("files", metavar="FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@verbosity_options
def info(files: tuple[Path, ...], as_json: bool) -> None:
    """Describe .inrv files without decoding them (no torch needed; fast); for a DICOM folder (or one of its
    files), list the image series it holds (index, modality, size, UID) and the files skipped, with why.

    Human-readable blocks, or with --json one JSON object per file, one per line (JSON Lines; a single
    file gives a single JSON document). A bad file prints one error line and sets the exit code (2),
    the other files are still described.
    """
    import inrv

    worst = 0
    printed = False
    for path in files:
        try:
            _require_input(path)
            if _is_dicom_input(path):
                from ..formats.dicom import describe_folder, describe_folder_text

                d = describe_folder(path)
                click.echo(dumps(d) if as_json else describe_folder_text(d))
                printed = True
                continue
            d = inrv.info(path).to_dict()
        except Exception as exc:  # noqa: BLE001 - reported per file; the others still run
            worst = max(worst, report_error(exc, verbosity()))
            continue
        d.setdefault("path", str(path))
        if as_json:
            click.echo(dumps(d))
        else:
            if printed:
                click.echo("")
            click.echo(info_text(d))
        printed = True
    if worst:
        click.get_current_context().exit(worst)


if __name__ == "__main__":  # pragma: no cover - python -m inrv.cli.main; see also cli/__main__.py
    main()
