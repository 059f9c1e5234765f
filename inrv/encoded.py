"""The seam between the codec and the file formats: :class:`Encoded`, and the model family ids.

``Encoded`` is plain data (no torch): the codec (``inrv.codec``) produces and consumes it, the
container (``inrv.formats``) stores and reads it, and neither imports the other. A second decoder
can be written from ``docs/format.md`` alone.

``FAMILIES`` is the one registry of model families: family id -> the codec package that implements
it (a string: nothing is imported here). That package's ``config`` module declares the family (its
config class, presets, config upgrades and model class: ``inrv.codec.family.FamilySpec``);
``inrv.codec`` reads every family from there, and the container checks a file's family id here
without importing the codec. A new family is one new package under ``codec/`` and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: model family id -> the codec package implementing it (its ``config`` module defines ``FAMILY``)
FAMILIES: dict[str, str] = {
    "paper": "inrv.codec.paper",
    "latent": "inrv.codec.latent",
    "nearlossless": "inrv.codec.nearlossless",
}

# progress(step, total, info) is called by training loops; info holds e.g. {"loss": float}.
Progress = Callable[[int, int, dict], None]


def list_models() -> list[str]:
    """The model family ids this inrv knows (sorted)."""
    return sorted(FAMILIES)


@dataclass
class Encoded:
    """A fitted volume: everything ``render`` needs, as plain msgpack-able data and bytes.

    Attributes:
        model: model family id (``"paper"`` or ``"latent"``), a key of :data:`FAMILIES`.
        config: msgpack-able dict: architecture, hyper-parameters and quantisation parameters
            needed to rebuild the decoder. Only str keys; values are None/bool/int/float/str/list/dict.
        sections: named payloads (quantised weights, entropy-coded latents ...). The container
            stores each one, zstd-compressed when that makes it smaller.
        shape: the array shape the model was fitted on (array axis order, see ``inrv.formats``).
        value_range: ``(lo, hi)``: the data were normalised as ``(x - lo) / (hi - lo)`` before fitting;
            ``render`` returns values in the original units.
        stats: measured at encode time (psnr, ssim, max_abs_err, seconds, device, steps, ...).
        reconstruction: see below; None after reading a file.
    """

    model: str
    config: dict[str, Any]
    sections: dict[str, bytes]
    shape: tuple[int, ...]
    value_range: tuple[float, float]
    stats: dict[str, Any] = field(default_factory=dict)
    # the model's own ``render`` of this Encoded on its fitted grid, kept by ``fit`` (which decodes to measure
    # itself) so that callers need not decode a second time; transient: never written to a file
    reconstruction: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def payload_bytes(self) -> int:
        return sum(len(b) for b in self.sections.values())
