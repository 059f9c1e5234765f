"""The one volume model of inrv: voxels + geometry + intensity facts + source metadata.

Conventions (chosen once; conversions live in the readers/writers only):

* ``Volume.data`` is a numpy array indexed ``[i, j, k]`` = (x, y, z) voxel index order, the
  order of NIfTI and ITK sizes (SimpleITK's ``GetArrayFromImage`` gives (z, y, x): readers transpose).
  It holds the *stored* values in the original dtype (e.g. int16 before NIfTI scl_slope/scl_inter).
* ``Geometry`` is ITK's model in LPS physical space: ``spacing[a]`` and ``direction`` column ``a``
  belong to array axis ``a``; ``direction`` is a row-major 3x3 matrix (9 floats), as SimpleITK.
* ``Intensity`` maps stored values to physical values: ``physical = stored * slope + intercept``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass
class Geometry:
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"spacing": [float(v) for v in self.spacing], "origin": [float(v) for v in self.origin],
                "direction": [float(v) for v in self.direction]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))


@dataclass
class Intensity:
    dtype: str = "float32"          # numpy dtype name of the stored values
    slope: float = 1.0
    intercept: float = 0.0
    units: str | None = None        # e.g. "HU" for CT, None when unknown
    min: float = 0.0                # of the stored values
    max: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "slope": float(self.slope), "intercept": float(self.intercept),
                "units": self.units, "min": float(self.min), "max": float(self.max)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Intensity":
        return cls(d["dtype"], d["slope"], d["intercept"], d.get("units"), d["min"], d["max"])


@dataclass
class Volume:
    data: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    intensity: Intensity | None = None
    # what the reader kept to restore the source faithfully, msgpack-able:
    # {"kind": "nifti1"|"nifti2"|"nrrd"|"mha"|"dicom"|"array", "nifti_header": bytes, "dicom": {...}}
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "array"})

    def __post_init__(self) -> None:
        if self.intensity is None:
            d = self.data
            self.intensity = Intensity(dtype=d.dtype.name, min=float(d.min()) if d.size else 0.0,
                                       max=float(d.max()) if d.size else 0.0)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)
