"""``inrv compare A B``: figures (and with ``--png`` a picture) of how far B is from A.

Also :func:`write_preview`, the picture ``inrv encode ... --preview OUT.png`` draws for the volume it just
encoded. The work is in :mod:`inrv.compare` and :mod:`inrv.preview`; this is the click layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .options import device_option, force_option, json_option, log, verbosity_options
from .output import dumps

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class WindowType(click.ParamType):
    """``auto``, ``ct``, ``percentile`` or ``LOW,HIGH`` (physical units)."""

    name = "auto|ct|percentile|LOW,HIGH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple) or value in ("auto", "ct", "percentile"):
            return value
        try:
            lo, hi = (float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r}: auto, ct, percentile or two numbers LOW,HIGH", param, ctx)
        if not hi > lo:
            self.fail(f"{value!r}: HIGH must be above LOW", param, ctx)
        return (lo, hi)


def window_option(f):
    return click.option("--window", type=WindowType(), default="auto", show_default=True,
                        help="Grey window of the picture: auto (CT: level 40 / width 400 HU; else A's "
                             "0.5-99.5th percentiles), ct, percentile, or LOW,HIGH.")(f)


def _require(path: Path) -> None:
    from ..errors import InputError

    if not path.exists():
        raise InputError(f"{path}: no such file or directory")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("a", metavar="A", type=click.Path(path_type=Path))
@click.argument("b", metavar="B", type=click.Path(path_type=Path))
@click.option("--png", type=click.Path(path_type=Path), default=None,
              help="Also draw the three mid-slices of A, B and |A - B| into this PNG (needs matplotlib).")
@window_option
@device_option
@force_option
@json_option
@verbosity_options
def compare(a: Path, b: Path, png: Path | None, window: Any, device: str | None, force: bool,
            as_json: bool) -> None:
    """Compare volume B with the reference A: PSNR, SSIM, max error, error percentiles.

    A and B are any volumes inrv reads (NIfTI, NRRD, MHA, a DICOM folder) or .inrv files (decoded in
    memory), on the same voxel grid. Errors are in physical units (HU for a CT); PSNR's peak is A's data
    range.

    \b
      inrv compare scan.nii.gz scan.inrv
      inrv compare scan.nii.gz decoded.nii.gz --png check.png --json
    """
    from ..compare import compare as compare_volumes
    from ..compare import format_compare_text, load_any

    _require(a)
    _require(b)
    if png is not None:
        from ..formats.atomic import check_writable

        check_writable(png, force)      # before the (maybe long) decode
    va = load_any(a, device=device)
    vb = load_any(b, device=device)
    figures = compare_volumes(va, vb)
    if png is not None:
        from ..preview import save_preview

        save_preview(va, vb, png, figures=figures, names=(a.name, b.name), window=window, force=force)
        figures["png"] = str(png)
    if as_json:
        click.echo(dumps({"a": str(a), "b": str(b), **figures}))
    else:
        click.echo(format_compare_text(figures, (str(a), str(b))))
        if png is not None:
            log(f"inrv: picture written to {png}")


def preview_option(f):
    return click.option("--preview", type=click.Path(path_type=Path), default=None, metavar="PNG",
                        help="After encoding, draw the mid-slices of the input, its decoded volume and the "
                             "error into this PNG (needs matplotlib).")(f)


def check_preview(png: Path | None, force: bool) -> None:
    """Fail before encoding when the picture cannot be written or drawn."""
    if png is None:
        return
    from ..formats.atomic import check_writable

    check_writable(png, force)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError('--preview needs matplotlib: pip install "inrv[plot]"') from None


def write_preview(src: Path, dst: Path, png: Path, *, force: bool = False, device: str | None = None,
                  series: str | None = None) -> None:
    """The picture of ``inrv encode SRC -o DST --preview PNG``: SRC against DST decoded."""
    from ..compare import compare as compare_volumes
    from ..compare import load_any
    from ..preview import save_preview

    va = load_any(src, series=series)
    vb = load_any(dst, device=device)
    save_preview(va, vb, png, figures=compare_volumes(va, vb), names=(src.name, dst.name), force=force)
    log(f"inrv: preview written to {png}")
