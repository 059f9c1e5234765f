"""formats/discovery.py: the one suffix table, the one path-level DICOM sniffer, the folder walk."""

from __future__ import annotations

import numpy as np
import pytest

from inrv.formats.discovery import VOLUME_SUFFIXES, looks_like_dicom, strip_volume_suffix, volume_suffix, walk
from inrv.formats.io import format_for_path


@pytest.mark.parametrize("name, suffix, fmt", [
    ("a.nii.gz", ".nii.gz", "nifti"), ("A.NII", ".nii", "nifti"), ("v.nrrd", ".nrrd", "nrrd"),
    ("v.nhdr", ".nhdr", "nrrd"), ("v.mha", ".mha", "mha"), ("v.MHD", ".mhd", "mha"), ("s.dcm", ".dcm", "dicom")])
def test_one_table_for_every_caller(name, suffix, fmt):
    assert volume_suffix(name) == suffix and VOLUME_SUFFIXES[suffix] == fmt
    assert format_for_path(name) == fmt                  # the reader uses the same table
    assert strip_volume_suffix(name) == name[: -len(suffix)]


@pytest.mark.parametrize("name", ["a.gz", "notes.txt", ".nii", "scan", "x.inrv"])
def test_names_that_are_not_volumes(name):
    assert volume_suffix(name) is None and strip_volume_suffix(name) == name


def test_dicom_sniffer_by_name_and_by_bytes(tmp_path):
    (tmp_path / "IM0001").write_bytes(bytes(128) + b"DICM" + bytes(16))      # Part 10, no suffix
    (tmp_path / "x.ima").write_bytes(b"")                                   # a DICOM name, not read
    (tmp_path / "notes").write_bytes(b"hello world" * 20)
    assert looks_like_dicom(tmp_path / "IM0001") and looks_like_dicom(tmp_path / "x.ima")
    assert not looks_like_dicom(tmp_path / "notes") and not looks_like_dicom(tmp_path / "missing")


def test_walk_is_sorted_and_skips_hidden_entries_and_one_folder(tmp_path):
    for rel in ("b/2.nii", "a/1.nii", "a/.hidden.nii", ".git/x.nii", "out/y.nii", "0.nii"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(np.zeros(1).tobytes())
    folders = list(walk(tmp_path, skip=tmp_path / "out"))
    assert [(f.rel, f.files) for f in folders] == [("", ("0.nii",)), ("a", ("1.nii",)), ("b", ("2.nii",))]
