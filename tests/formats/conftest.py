"""The formats tests' builders are the shared ones in ``tests/conftest.py``; this file re-exports them for
tests that load it by path."""

from conftest import (SHAPE, SPACING, make_volume, oblique_geometry, phantom, ras_affine,  # noqa: F401
                      rotation, write_pydicom_series, write_scaled_nifti)
