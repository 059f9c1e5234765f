"""The face every model family shows, and loading a family by its id.

A *model family* is one class with the same face (compare numcodecs' ``Codec``)::

    family = get_model("paper")
    encoded = family.fit(data, config, device="cpu", progress=None)   # np.ndarray -> Encoded
    array = family.render(encoded, shape=None, device="cpu")          # Encoded -> np.ndarray

:class:`Encoded` (the seam with the file formats) and the registry of families live in
``inrv.encoded``, which the container reads without importing the codec; each family declares itself
in ``codec/<family>/config.py`` (:class:`~inrv.codec.family.FamilySpec`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..encoded import Encoded, Progress, list_models
from .config import family_spec

__all__ = ["Encoded", "Progress", "ModelFamily", "get_model", "list_models"]


class ModelFamily(Protocol):
    name: str

    def fit(self, data: np.ndarray, config: Any, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded: ...

    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray: ...


def get_model(name: str) -> ModelFamily:
    """Return an instance of the model family ``name``; raises ``InputError`` if unknown."""
    from ..errors import InputError  # local: keeps import order trivial

    spec = family_spec(name)
    if spec is None:
        raise InputError(f"unknown model family {name!r} (known: {', '.join(list_models())})")
    return spec.load_model()
