"""The benchmark volumes by name, so that no command needs a path of one machine.

* ``mni_t1``: the MNI ICBM152 2009 nonlinear symmetric T1 template, 197 x 233 x 189 uint8, 1 mm, as it ships
  inside the ``nilearn`` wheel (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``;
  ``pip install "inrv[mni]"`` or ``pip install nilearn``; nothing is downloaded at run time).
* ``mni_patch64``: ``samples/mni_patch64.nii.gz``, the 64^3 crop of ``mni_t1`` starting at voxel
  (x, y, z) = (46, 104, 82), shipped in this repository (see ``samples/NOTICE.md``).

Any other argument is a path to a volume file, taken as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NILEARN_MNI_T1 = ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
NAMES = ("mni_t1", "mni_patch64")


def _key(src: str | os.PathLike) -> str | None:
    s = os.fspath(src)
    for name in NAMES:
        if s in (name, f"{name}.nii.gz") and not os.path.exists(s):
            return name
    return None


def resolve(src: str | os.PathLike) -> str:
    """The file to read for ``src``: a name above, or a path (returned as it is)."""
    key = _key(src)
    if key == "mni_patch64":
        return str(ROOT / "samples" / "mni_patch64.nii.gz")
    if key == "mni_t1":
        try:
            import nilearn
        except ImportError:
            raise SystemExit('mni_t1 is the MNI152 T1 template inside the nilearn wheel: pip install "inrv[mni]"')
        return str(Path(nilearn.__file__).parent.joinpath(*NILEARN_MNI_T1))
    return os.fspath(src)


def display_name(src: str | os.PathLike) -> str:
    """The volume's name in tables and CSV files: ``mni_t1.nii.gz`` for the name ``mni_t1``, else the basename."""
    key = _key(src)
    return f"{key}.nii.gz" if key else os.path.basename(os.fspath(src))
