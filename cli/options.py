"""Pieces shared by the ``inrv`` commands (and by ``inrv batch`` in ``cli/batch.py``).

* :func:`encoding_options`: the encoder options (``--preset``, ``--model``, ``--ds``, ``--nc``, ``--sn``,
  ``--epochs``, ``--seed``, ``--bpv``, ``--psnr``, ``--keep-private``) as one decorator;
  :func:`config_overrides` turns their values into config field overrides and :func:`build_config`
  into a checked config object (a usage error, exit code 2, when an option does not apply to the model).
* :func:`device_option`, :func:`force_option`, :func:`json_option`, :func:`progress_option`,
  :func:`verbosity_options`: small option decorators used by several commands.
* :class:`InrvGroup`: a click group that turns every exception into a one-line message on stderr and
  the documented exit code (see :func:`classify_error` and ``docs/cli.md``).
* :class:`ProgressBar`: a tqdm bar on stderr fed by the codec's ``progress(step, total, info)`` callback;
  off when stderr is not a terminal, with ``-q`` or with ``--no-progress``.

Nothing here imports torch: ``inrv info`` and ``inrv --version`` stay fast.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import sys
import traceback
from typing import Any, Callable

import click

from ..codec.base import list_models
from ..codec.config import DEFAULT_PRESET, PRESETS, family_spec
from ..errors import InrvError, UsageError

# exit codes (docs/cli.md)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 8          # inrv batch: some inputs OK, some failed (same number as dcm2niix)
EXIT_INTERRUPTED = 130    # Ctrl-C (128 + SIGINT)

PROG = "inrv"


# CLI option name -> config field name (the options of encoding_options that go into a config)
OPTION_FIELDS = {"ds": "ds", "nc": "nc", "sn": "sn", "epochs": "steps", "seed": "seed",
                 "bpv": "target_bpv", "psnr": "target_psnr", "lmbda": "lmbda", "time_budget": "time_budget",
                 "max_error": "max_error"}
_FLAG = {"ds": "--ds", "nc": "--nc", "sn": "--sn", "epochs": "--epochs", "seed": "--seed",
         "bpv": "--bpv", "psnr": "--psnr", "lmbda": "--lambda", "time_budget": "--time-budget",
         "max_error": "--max-error"}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``2m``, ``1m30s``, ``1.5h`` (a positive duration), else ValueError."""
    import re

    t = str(text).strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", t)
    if not t or parts is None or not any(parts.groups()):
        raise ValueError(f"{text!r} is not a duration like 90s, 2m or 1h")
    h, m, s_ = (float(g) if g else 0.0 for g in parts.groups())
    sec = 3600 * h + 60 * m + s_
    if sec <= 0:
        raise ValueError(f"{text!r}: a time budget must be positive")
    return sec


class DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def family_default_preset(model: str) -> str:
    """The preset a family gets when only ``--model`` is given: the project default when it is of that
    family, else the preset named like the family, else its first (from the one family registry)."""
    if PRESETS[DEFAULT_PRESET].model == model:
        return DEFAULT_PRESET
    presets = family_spec(model).presets
    return model if model in presets else next(iter(presets))


# --------------------------------------------------------------------------- verbosity

def _count_into_meta(key: str) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, value: int) -> None:
        # ctx.meta is shared by a group and its subcommands: -v works before or after the command name
        ctx.meta[key] = ctx.meta.get(key, 0) + (value or 0)
    return callback


def verbosity_options(f: Callable) -> Callable:
    """``-q/--quiet`` (no progress bar, no summary line) and ``-v/--verbose`` (details; a traceback on
    errors). Both may be repeated; they are read with :func:`verbosity`."""
    f = click.option("-v", "--verbose", count=True, expose_value=False, callback=_count_into_meta("inrv.verbose"),
                     help="More detail on stderr; -v also prints a traceback on errors.")(f)
    f = click.option("-q", "--quiet", count=True, expose_value=False, callback=_count_into_meta("inrv.quiet"),
                     help="No progress bar and no summary line (errors are still printed).")(f)
    return f


def verbosity(ctx: click.Context | None = None) -> int:
    """``verbose - quiet`` counts of the current invocation: < 0 quiet, 0 normal, > 0 verbose."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return 0
    return int(ctx.meta.get("inrv.verbose", 0)) - int(ctx.meta.get("inrv.quiet", 0))


def log(message: str, level: int = 0) -> None:
    """Print ``message`` on stderr when the verbosity is at least ``level`` (0: unless -q)."""
    if verbosity() >= level:
        click.echo(message, err=True)


# --------------------------------------------------------------------------- small options

def device_option(f: Callable) -> Callable:
    return click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
                        help="Where to run the model (default auto: CUDA when present, else CPU). "
                             "Asking for cuda without a GPU is an error (exit 2), never a silent fallback.")(f)


def force_option(f: Callable) -> Callable:
    return click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print a JSON document on stdout (nothing else goes to stdout).")(f)


def progress_option(f: Callable) -> Callable:
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Force the progress bar on or off (default: on when stderr is a terminal "
                             "and -q is not given).")(f)


def encoding_options(f: Callable) -> Callable:
    """The encoder options, shared by ``inrv encode`` and ``inrv batch``.

    The decorated function receives ``preset, model, ds, nc, sn, epochs, seed, bpv, psnr, keep_private,
    device`` as keyword arguments. Before it is called, the options are checked together (an option that
    does not apply to the model, ``--bpv`` with ``--psnr``, a preset of another family than ``--model``:
    :class:`~inrv.errors.UsageError`, exit 2) and ``preset`` is replaced by the resolved preset name
    (``--model latent`` alone gives ``balanced``), so ``make_config(preset, **config_overrides(**opts))``
    is the config. :func:`build_config` does that in one call.
    """
    options = [
        click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                     help=f"Named configuration (default {DEFAULT_PRESET}; with --model latent: "
                          f"{family_default_preset('latent')}). 'tiny' and 'latent-tiny' take seconds on a CPU."),
        click.option("--model", type=click.Choice(list_models()), default=None,
                     help="Model family: paper (k-space downsampling + SIREN + SRNO) or latent "
                          "(coded latent grids). Implied by --preset."),
        click.option("--ds", default=None, metavar="F",
                     help="paper: k-space downsampling factor, 2, 4, 8 (or 1/2 ...), or per axis X,Y,Z e.g. 2,2,1."),
        click.option("--nc", type=click.IntRange(min=1), default=None,
                     help="paper: channels of the super-resolution feature extractor."),
        click.option("--sn", type=click.IntRange(min=1), default=None,
                     help="paper: neurons per SIREN layer."),
        click.option("--epochs", "--steps", "epochs", type=click.IntRange(min=1), default=None,
                     help="Training steps (the paper calls them epochs)."),
        click.option("--seed", type=int, default=None, help="Random seed (default 0: runs are reproducible)."),
        click.option("--bpv", type=click.FloatRange(min=0, min_open=True), default=None, metavar="BITS",
                     help="latent: search the rate weight for this many bits per voxel."),
        click.option("--psnr", type=click.FloatRange(min=0, min_open=True), default=None, metavar="DB",
                     help="latent: search the rate weight for this PSNR in dB (peak = data range)."),
        click.option("--lambda", "lmbda", type=click.FloatRange(min=0, min_open=True), default=None,
                     metavar="L", help="latent: the rate weight itself (loss = MSE + L x bits/voxel; "
                                       "larger = smaller file)."),
        click.option("--time-budget", "time_budget", type=DurationType(), default=None,
                     help="latent: finish the whole encode (search included) in about this time on this "
                          "machine, e.g. 90s, 2m, 1h; the training steps are planned to fit "
                          "(--steps is then an upper bound)."),
        click.option("--max-error", "max_error", type=click.FloatRange(min=0), default=None, metavar="E",
                     help="Guarantee |decoded - original| <= E for every voxel, in the file's stored units "
                          "(e.g. HU); E = 0 is lossless. Uses the nearlossless coder (no training)."),
        click.option("--lossless", is_flag=True, default=None,
                     help="Lossless (same as --max-error 0): integer voxels come back bit-exact."),
        click.option("--keep-private", is_flag=True,
                     help="Keep names in the NIfTI descrip/aux_file and DICOM patient tags "
                          "(default: they are blanked in the .inrv file)."),
        device_option,
    ]

    @functools.wraps(f)
    def checked(*args: Any, **kwargs: Any) -> Any:
        build_config(**kwargs)  # raises UsageError before any work
        kwargs["preset"] = resolve_preset(kwargs.get("preset"), _model_of(kwargs))
        return f(*args, **kwargs)

    for opt in reversed(options):
        checked = opt(checked)
    return checked


# --------------------------------------------------------------------------- configs

# options that only one family has: given without --preset/--model, they choose the family
_PAPER_ONLY = ("ds", "nc", "sn")
_LATENT_ONLY = ("bpv", "psnr", "lmbda", "time_budget")


def _model_of(opts: dict[str, Any]) -> str | None:
    """``--model``, else the family implied by family-only options when no ``--preset`` is given
    (``inrv encode x --ds 4`` means the paper model, ``inrv encode x --bpv 0.5`` the latent one)."""
    if opts.get("max_error") is not None or opts.get("lossless"):
        return opts.get("model") or (None if opts.get("preset") else "nearlossless")
    if opts.get("model") or opts.get("preset"):
        return opts.get("model")
    paper = any(opts.get(k) is not None for k in _PAPER_ONLY)
    latent = any(opts.get(k) is not None for k in _LATENT_ONLY)
    if paper != latent:
        return "paper" if paper else "latent"
    return None


def resolve_preset(preset: str | None = None, model: str | None = None) -> str:
    """The preset to start from: ``--preset`` if given, else the default preset of ``--model``, else
    the project default. A preset of another family than ``--model`` is a usage error."""
    if preset is None:
        return family_default_preset(model) if model in list_models() else DEFAULT_PRESET
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    family = PRESETS[preset].model
    if model is not None and model != family:
        raise UsageError(f"--preset {preset} is a {family!r} preset; it does not go with --model {model}")
    return preset


def config_overrides(**opts: Any) -> dict[str, Any]:
    """Config field overrides from the values of :func:`encoding_options` (other keys are ignored).

    ``config_overrides(epochs=5, bpv=None, ds="2,2,1") == {"steps": 5, "ds": "2,2,1"}``.
    """
    out = {OPTION_FIELDS[k]: v for k, v in opts.items() if k in OPTION_FIELDS and v is not None}
    if opts.get("lossless"):
        out["max_error"] = 0.0
    return out


def build_config(**opts: Any):
    """A checked config object from the values of :func:`encoding_options` (other keys are ignored).

    Raises :class:`~inrv.errors.UsageError` (exit 2) for options that do not apply to the chosen model
    (e.g. ``--bpv`` with the paper model), for ``--bpv`` together with ``--psnr``, and for bad values.
    """
    from ..codec.config import make_config

    if opts.get("lossless") or opts.get("max_error") is not None:
        _check_bounded(opts)
    name = resolve_preset(opts.get("preset"), _model_of(opts))
    base = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(base)}
    for opt, field in OPTION_FIELDS.items():
        if opts.get(opt) is not None and field not in fields:
            owners = [fam for fam in list_models()
                      if field in {f.name for f in dataclasses.fields(family_spec(fam).config)}]
            raise UsageError(f"{_FLAG[opt]} applies to the {' and '.join(owners)} model only, "
                             f"not to {base.model!r} (preset {name})")
    if opts.get("bpv") is not None and opts.get("psnr") is not None:
        raise UsageError("give --bpv or --psnr, not both")
    over = config_overrides(**opts)
    if opts.get("time_budget") is not None and opts.get("epochs") is None:
        over["steps"] = 1_000_000       # the budget decides; the step count is only an upper bound
    return make_config(name, **over)


def _check_bounded(opts: dict[str, Any]) -> None:
    """--max-error/--lossless: the bound sets the rate, so rate targets and network options do not apply."""
    flag = "--lossless" if opts.get("lossless") else "--max-error"
    if opts.get("lossless") and opts.get("max_error") not in (None, 0, 0.0):
        raise UsageError("give --lossless or --max-error E, not both")
    for k in ("bpv", "psnr"):
        if opts.get(k) is not None:
            raise UsageError(f"{flag} sets the rate itself (the smallest file within the bound); "
                             f"it does not combine with {_FLAG[k]}")
    for k in ("ds", "nc", "sn", "epochs"):
        if opts.get(k) is not None:
            raise UsageError(f"{_FLAG[k]} does not apply with {flag} (the nearlossless coder trains no network)")
    fam = opts.get("model") or (PRESETS[opts["preset"]].model if opts.get("preset") in PRESETS else None)
    if fam not in (None, "nearlossless"):
        raise UsageError(f"{flag} uses the nearlossless coder; it does not go with the {fam!r} model "
                         "(a neural layer with a residual bound is not implemented yet)")


# --------------------------------------------------------------------------- errors

def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_out_of_memory(exc: BaseException) -> bool:
    """The one out-of-memory test: ``MemoryError``, torch's ``OutOfMemoryError`` (CUDA), or a RuntimeError
    whose message says the allocator failed (CPU tensors)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text
    return False


def one_line(text: str, limit: int = 400) -> str:
    """The first non-empty line of ``text``, shortened to ``limit`` characters."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def classify_error(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for any exception (also used by ``inrv batch`` per input).

    * :class:`~inrv.errors.InrvError` subclasses: their ``exit_code`` (2: bad input or usage, 1: failed run);
    * out of memory (``MemoryError``, torch OOM): 1; a full disk (``ENOSPC``): 1;
    * a missing or unreadable path (``FileNotFoundError``, ``PermissionError``, ...): 2;
    * ``KeyboardInterrupt``: 130; anything else: 1 (a bug: rerun with -v for the traceback).
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    for e in _chain(exc):
        if is_out_of_memory(e):
            return EXIT_FAILED, ("out of memory: try --device cpu, a smaller preset or a smaller volume "
                                 f"({one_line(e, 200) or type(e).__name__})")
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            where = f" writing {e.filename}" if e.filename else ""
            return EXIT_FAILED, f"disk full{where}: free some space and run again"
    if isinstance(exc, InrvError):
        return int(getattr(exc, "exit_code", EXIT_FAILED)), one_line(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USAGE, f"{where}{exc.strerror or exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_FAILED, f"{where}{exc.strerror or one_line(exc)}"
    detail = one_line(exc)
    return EXIT_FAILED, f"unexpected {type(exc).__name__}{': ' + detail if detail else ''}"


def report_error(exc: BaseException, verbose: int = 0) -> int:
    """Print ``inrv: error: <one line>`` (and with ``verbose`` the traceback first) on stderr; return the
    exit code."""
    code, message = classify_error(exc)
    if verbose > 0 and not isinstance(exc, KeyboardInterrupt):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    elif code == EXIT_FAILED and not isinstance(exc, InrvError) and not is_out_of_memory(exc):
        message += " (run with -v for the traceback)"
    prefix = f"{PROG}: " if code == EXIT_INTERRUPTED else f"{PROG}: error: "
    try:
        click.echo(prefix + message, err=True)
    except Exception:  # stderr gone: nothing more we can do
        pass
    return code


class InrvGroup(click.Group):
    """A click group whose commands never show a traceback unless ``-v`` was given: every exception
    becomes one line on stderr and the exit code of :func:`classify_error`. click's own usage errors
    (unknown option, bad value) keep click's message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:
            # e.g. `inrv info --json *.inrv | head -1`: stop quietly, like cat
            _silence_stdout()
            ctx.exit(EXIT_FAILED)
        except BaseException as exc:  # noqa: BLE001 - the point is to catch everything, Ctrl-C included
            code = report_error(exc, verbosity(ctx))
            ctx.exit(code)


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# --------------------------------------------------------------------------- progress

class ProgressBar:
    """A ``progress(step, total, info)`` callback drawing one tqdm bar on stderr.

    ``enabled``: True (always), False (never) or None (only when stderr is a terminal: log files and CI
    stay clean). When a fit reports a new ``total`` (e.g. the latent model's rate search, then its final
    fit) the bar restarts. Use it as a context manager so that the bar is closed on errors too.
    """

    def __init__(self, desc: str = "", enabled: bool | None = None, unit: str = "step",
                 mininterval: float = 0.1) -> None:
        self.desc = desc
        self.enabled = enabled
        self.unit = unit
        self.mininterval = mininterval      # seconds between redraws
        self._bar = None

    def __call__(self, step: int, total: int, info: dict | None = None) -> None:
        if self.enabled is False:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=False,
                             dynamic_ncols=True, mininterval=self.mininterval,
                             disable=None if self.enabled is None else False)
        bar = self._bar
        if bar.disable:
            return
        if total != bar.total or step < bar.n:
            bar.reset(total=total)
        if step > bar.n:
            bar.update(step - bar.n)
        if info:
            bar.set_postfix({k: _short(v) for k, v in info.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _short(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def progress_enabled(flag: bool | None, ctx: click.Context | None = None) -> bool | None:
    """``--progress/--no-progress`` plus ``-q`` -> the ``enabled`` argument of :class:`ProgressBar`."""
    if flag is not None:
        return flag
    return False if verbosity(ctx) < 0 else None

