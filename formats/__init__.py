"""inrv.formats: volumes in and out (NIfTI, DICOM, NRRD, MHA) and the ``.inrv`` container.

Nothing here imports torch.
"""

from .volume import Geometry, Intensity, Volume

__all__ = ["Geometry", "Intensity", "Volume"]
