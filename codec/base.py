"""The seam between the codec and the file formats, and the registry of model families.

A *model family* is one class with the same face (compare numcodecs' ``Codec``)::

    family = get_model("paper")
    encoded = family.fit(data, config, device="cpu", progress=None)   # np.ndarray -> Encoded
    array = family.render(encoded, shape=None, device="cpu")          # Encoded -> np.ndarray

``Encoded`` is plain data (no torch): ``inrv.formats.container`` stores it without importing
the codec, and a second decoder can be written from ``docs/format.md``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

# progress(step, total, info) is called by training loops; info holds e.g. {"loss": float}.
Progress = Callable[[int, int, dict], None]


@dataclass
class Encoded:
    """A fitted volume: everything ``render`` needs, as plain msgpack-able data and bytes.

    Attributes:
        model: model family id (``"paper"`` or ``"latent"``), a key of the registry.
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


class ModelFamily(Protocol):
    name: str

    def fit(self, data: np.ndarray, config: Any, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded: ...

    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray: ...


# family id -> "module:attribute"; modules are imported (with torch) only when used.
_REGISTRY: dict[str, str] = {
    "paper": "inrv.codec.paper:PaperModel",
    "latent": "inrv.codec.latent:LatentModel",
    "nearlossless": "inrv.codec.nearlossless:NearLosslessModel",
}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model(name: str) -> ModelFamily:
    """Return an instance of the model family ``name``; raises ``InputError`` if unknown."""
    from ..errors import InputError  # local: keeps import order trivial

    try:
        target = _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown model family {name!r} (known: {', '.join(list_models())})") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)()
