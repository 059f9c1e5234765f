"""``inrv decode FOLDER -o OUT``: decode a whole tree written by ``inrv batch`` (:mod:`inrv.tree`).

Every ``.inrv`` file goes back to a volume under its input's name, every other file is copied as it is; in a
BIDS dataset the decoded images' sidecars get the lossy-compression note (``docs/bids.md``).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import UsageError
from .options import log
from .output import dumps


def decode_tree(src: Path, output: Path | None, *, shape, device: str | None, force: bool, as_json: bool) -> None:
    from ..tree import decompress_tree

    if output is None:
        raise UsageError(f"{src} is a folder: name the output folder with -o (e.g. -o {src.name}-decoded)")
    if shape is not None:
        raise UsageError("--shape renders one volume on another grid; it does not apply to a folder")
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output} exists and is not a folder")
    t0 = time.perf_counter()
    report = decompress_tree(src, output, device=device, force=force,
                             on_file=lambda action, rel: log(f"inrv: {action} {rel}", 1))
    seconds = time.perf_counter() - t0
    if as_json:
        click.echo(dumps({"input": str(src), "output": str(output), **report, "seconds": seconds}))
    else:
        bids = " (BIDS dataset: decoded sidecars marked lossy)" if report["bids"] else ""
        log(f"{src} -> {output}: {len(report['decoded'])} decoded, {len(report['copied'])} copied, "
            f"{report['unchanged']} unchanged{bids}, {seconds:.1f} s")
