"""Decode a whole tree that ``inrv batch`` wrote: every ``.inrv`` file back to a volume, every other file copied.

    from inrv.tree import decompress_tree
    report = decompress_tree("compressed/", "restored/")     # what ``inrv decode compressed/ -o restored/`` does

Names: an ``.inrv`` file gets back the name of the input it was made from, as ``inrv batch`` recorded it in the
tree's ``manifest*.jsonl`` (``sub-01_T1w.nii`` stays ``.nii``); without a manifest row, the suffix of the source
format (``.nii.gz`` for NIfTI, ``.nrrd``, ``.mha``, a folder for a DICOM series). Every other file is copied byte
for byte, except the batch's own bookkeeping (the manifests at the root, ``*.inrv.lock`` files). When the tree
is a BIDS dataset (``dataset_description.json`` at its root), the JSON sidecar of every decoded NIfTI image
says that the data went through a lossy codec (:mod:`inrv.formats.bids`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

from .errors import InputError, UsageError

_MANIFEST = re.compile(r"manifest(\.shard-\d+-of-\d+)?\.jsonl")
_DECODE_SUFFIX = {"nifti1": ".nii.gz", "nifti2": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": ""}


def batch_names(root: str | os.PathLike) -> dict[str, str]:
    """``{output: input}`` (relative posix paths) of the ok rows of the batch manifests at ``root``."""
    names: dict[str, str] = {}
    for path in sorted(Path(root).glob("manifest*.jsonl")):
        if not _MANIFEST.fullmatch(path.name):
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue                          # a torn last line of a killed run
            if (isinstance(row, dict) and row.get("status") == "ok" and isinstance(row.get("output"), str)
                    and isinstance(row.get("input"), str) and row.get("kind", "file") == "file"):
                names[row["output"]] = row["input"]
    return names


def _finite(v: float | None) -> float | None:
    """JSON sidecars hold finite numbers only (an exact decode has PSNR inf: left out)."""
    return float(v) if v is not None and math.isfinite(v) else None


def _is_bookkeeping(rel: str) -> bool:
    return ("/" not in rel and _MANIFEST.fullmatch(rel) is not None) or rel.endswith(".inrv.lock")


def _is_inrv(path: Path) -> bool:
    from .formats.container import is_inrv

    try:
        with open(path, "rb") as f:
            return is_inrv(f.read(16))
    except OSError:
        return False


def decompress_tree(src: str | os.PathLike, dst: str | os.PathLike, *, device: str | None = None,
                    force: bool = False, dry_run: bool = False,
                    on_file: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Decode every ``.inrv`` file under ``src`` into the same place under ``dst`` and copy every other file.

    Returns ``{"decoded": [...], "copied": [...], "unchanged": n, "bids": bool, "sidecars": [...]}``
    (relative paths under ``dst``). Existing outputs are replaced only with ``force`` (checked for every
    file before anything is written). ``on_file(action, rel)`` is called per file (progress).
    """
    from . import __version__, decompress, info
    from .formats import bids

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise InputError(f"{src} is not a folder")
    if dst.resolve() == src.resolve():
        raise UsageError("the output folder must differ from the input folder")
    names = batch_names(src)
    is_bids = bids.is_bids_dataset(src)
    images: list[tuple[str, Path, str]] = []        # (rel in src, path, rel in dst)
    others: list[tuple[str, Path]] = []
    for rel, path in bids.dataset_files(src, skip=dst):
        if _is_bookkeeping(rel):
            continue
        if rel.lower().endswith(".inrv") and _is_inrv(path):
            out = names.get(rel)
            if out is None:
                kind = (info(path).details.get("source") or {})
                kind = kind.get("kind") if isinstance(kind, dict) else kind
                out = rel[: -len(".inrv")] + _DECODE_SUFFIX.get(kind or "", ".nii.gz")
            images.append((rel, path, out))
        else:
            others.append((rel, path))
    if not force:                                    # every conflict before any work
        for _, _, out in images:
            if (dst / out).exists():
                raise UsageError(f"{dst / out} exists; use -f/--force to overwrite")
        for rel, path in others:
            if (dst / rel).exists() and not bids.same_file_content(path, dst / rel):
                raise UsageError(f"{dst / rel} exists with other content; use -f/--force to overwrite")
    report: dict[str, Any] = {"decoded": [out for _, _, out in images], "copied": [], "unchanged": 0,
                              "bids": is_bids, "sidecars": []}
    if dry_run:
        report["copied"] = [rel for rel, path in others if not bids.same_file_content(path, dst / rel)]
        return report
    for rel, path in others:
        if bids.copy_file(path, dst / rel, force=force):
            report["copied"].append(rel)
        else:
            report["unchanged"] += 1
        if on_file:
            on_file("copy", rel)
    for rel, path, out in images:
        target = dst / out
        target.parent.mkdir(parents=True, exist_ok=True)
        vol = decompress(path, target, device=device, force=force)
        if on_file:
            on_file("decode", out)
        sidecar = bids.sidecar_for(target) if is_bids else None
        if sidecar is not None:
            summary = info(path)
            lossy = (vol.source or {}).get("lossy") or {}
            figures = {"Model": summary.model, "PSNR": _finite(summary.psnr), "SSIM": _finite(summary.ssim),
                       "MaxAbsError": _finite(summary.max_abs_err), "BitsPerVoxel": round(summary.bpv, 4),
                       "FileBytes": summary.file_bytes}
            bids.mark_lossy(sidecar, bids.lossy_note(ratio=lossy.get("lossy_ratio"),
                                                     method=f"inrv {__version__} {summary.model}", figures=figures,
                                                     exact=summary.max_abs_err == 0))
            report["sidecars"].append(sidecar.relative_to(dst).as_posix())
    return report


__all__ = ["decompress_tree", "batch_names"]
