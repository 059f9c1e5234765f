"""BIDS datasets: what ``inrv batch`` and the tree decode keep besides the images.

A `BIDS <https://bids.neuroimaging.io>`_ dataset is a folder with ``dataset_description.json`` at its root.
Its images (``.nii``/``.nii.gz``) are what inrv compresses; everything else (JSON sidecars, ``bval``/``bvec``,
``.tsv`` tables, ``README``, ``CHANGES``, ``.bidsignore``, ...) must survive byte for byte, so that a decoded
tree is again a dataset a BIDS validator accepts::

    if is_bids_dataset(src):
        copy_others(src, dst, images={"sub-01/anat/sub-01_T1w.nii.gz", ...})   # byte-identical copies
    ...
    mark_lossy(sidecar_for(decoded_image), {...})   # the decoded image's sidecar says it went through inrv

The lossy note (:data:`LOSSY_KEYS`) uses the DICOM attribute keywords that dcm2niix-style sidecars already use:
``"LossyImageCompression": "01"`` (the image has undergone lossy compression), ``LossyImageCompressionRatio``
(raw bytes / ``.inrv`` bytes) and ``LossyImageCompressionMethod`` (``"inrv <version> <model>"``), plus
``InrvCompression``, an object with the figures measured at encode time (PSNR in dB, SSIM, max abs error,
bits per voxel). The sidecar's original text is kept as it is, the new keys are added before its closing brace.

No torch, no codec: plain files and JSON.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import InputError, UsageError
from .atomic import atomic_output
from .discovery import walk

DESCRIPTION = "dataset_description.json"
#: hidden files that belong to a dataset (others, like editor or OS droppings and temporaries, do not)
HIDDEN_KEPT = frozenset({".bidsignore"})
#: the keys :func:`mark_lossy` adds to a sidecar
LOSSY_KEYS = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
              "InrvCompression")
IMAGE_SUFFIXES = (".nii.gz", ".nii")


def is_bids_dataset(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a ``dataset_description.json`` (the one file every BIDS dataset has)."""
    return (Path(root) / DESCRIPTION).is_file()


def dataset_files(root: str | os.PathLike, *, skip: str | os.PathLike | None = None) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of every file under ``root``, sorted; hidden folders (``.git``,
    ``.datalad``), hidden files other than :data:`HIDDEN_KEPT`, and the folder ``skip`` are left out."""
    for folder in walk(root, skip=skip, hidden_kept=HIDDEN_KEPT):
        for name in folder.files:
            path = folder.path / name
            if path.is_file():
                yield (f"{folder.rel}/{name}" if folder.rel else name), path


def same_file_content(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both files exist with the same bytes."""
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def copy_file(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> bool:
    """Copy ``src`` to ``dst`` byte for byte (atomically, folders created). Returns False when ``dst`` already
    holds the same bytes (nothing written); a different existing ``dst`` is replaced only with ``force``."""
    dst = Path(dst)
    if dst.exists():
        if same_file_content(src, dst):
            return False
        if not force:
            raise UsageError(f"{dst} exists with other content; use -f/--force to overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dst, force=True) as tmp:
        shutil.copyfile(src, tmp)
    return True


def copy_others(src: str | os.PathLike, dst: str | os.PathLike, images: Iterable[str], *,
                skip: str | os.PathLike | None = None, ignore: Iterable[str] = (),
                force: bool = False, dry_run: bool = False) -> list[str]:
    """Copy every file of the dataset ``src`` that is not in ``images`` (relative posix paths) nor in
    ``ignore`` to the same relative path under ``dst``; returns the relative paths copied (or, with
    ``dry_run``, that would be). Files already identical in ``dst`` are left alone."""
    images = set(images) | set(ignore)
    out = []
    for rel, path in dataset_files(src, skip=skip):
        if rel in images:
            continue
        target = Path(dst) / rel
        if dry_run:
            if not same_file_content(path, target):
                out.append(rel)
        elif copy_file(path, target, force=force):
            out.append(rel)
    return out


def encodable(path: str | os.PathLike) -> bool:
    """False for a NIfTI image with more than one volume (4D ``bold``, ``dwi`` ...): inrv encodes 3D volumes, so
    in a BIDS dataset such images are copied as they are. Reads the header only."""
    if image_stem(Path(path).name) is None:
        return True
    try:
        import nibabel as nib

        shape = nib.load(str(path)).header.get_data_shape()
    except Exception:  # noqa: BLE001 - not readable here: let the encoder report it
        return True
    return all(int(n) == 1 for n in shape[3:])


def image_stem(rel: str) -> str | None:
    """``sub-01/anat/sub-01_T1w.nii.gz -> sub-01/anat/sub-01_T1w``; None for a file that is not a NIfTI image."""
    low = rel.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix) and len(rel) > len(suffix):
            return rel[: -len(suffix)]
    return None


def sidecar_for(image: str | os.PathLike) -> Path | None:
    """The JSON sidecar beside a NIfTI image (same name, ``.json``); None for a file that is not one."""
    image = Path(image)
    stem = image_stem(image.name)
    return None if stem is None else image.with_name(stem + ".json")


def lossy_note(*, ratio: float | None, method: str, figures: dict[str, Any] | None = None,
               exact: bool = False) -> dict[str, Any]:
    """The sidecar keys of :data:`LOSSY_KEYS` for an image decoded from an ``.inrv`` file; ``exact``: the file
    was coded losslessly (max error 0), ``LossyImageCompression`` is then ``"00"``."""
    note: dict[str, Any] = {"LossyImageCompression": "00" if exact else "01"}
    if ratio is not None and ratio > 0:
        note["LossyImageCompressionRatio"] = round(float(ratio), 2)
    note["LossyImageCompressionMethod"] = method
    if figures:
        note["InrvCompression"] = {k: v for k, v in figures.items() if v is not None}
    return note


def mark_lossy(sidecar: str | os.PathLike, note: dict[str, Any]) -> None:
    """Add ``note``'s keys to a JSON sidecar (created when missing), keeping the original text as it is:
    the keys are inserted before the closing brace (a key already there is replaced, the file re-written)."""
    sidecar = Path(sidecar)
    if not sidecar.exists():
        text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in note.items()) + "\n}\n"
    else:
        original = sidecar.read_text(encoding="utf-8")
        try:
            data = json.loads(original)
        except ValueError as e:
            raise InputError(f"{sidecar}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise InputError(f"{sidecar}: a sidecar must be a JSON object")
        if any(k in data for k in note):            # decoded twice into the same tree: write it anew
            data.update(note)
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        else:
            end = original.rstrip().rfind("}")
            body = original[:end].rstrip()
            sep = "," if body.rstrip() != "{" else ""
            indent = re.findall(r'\n([ \t]+)"', body)             # the file's own indentation, if any
            pad = indent[-1] if indent else "  "
            added = ",\n".join(f"{pad}{json.dumps(k)}: {json.dumps(v)}" for k, v in note.items())
            text = f"{body}{sep}\n{added}\n}}\n"
        if json.loads(text) != {**data, **note}:   # never write a sidecar that says something else
            raise InputError(f"{sidecar}: could not add the lossy-compression note")
    with atomic_output(sidecar, force=True) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


__all__ = ["is_bids_dataset", "encodable", "dataset_files", "copy_file", "copy_others", "same_file_content", "image_stem",
           "sidecar_for", "lossy_note", "mark_lossy", "DESCRIPTION", "LOSSY_KEYS", "HIDDEN_KEPT"]
