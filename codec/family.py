"""What a model family declares about itself, torch-free: :class:`FamilySpec`.

Each family package (``codec/paper/``, ``codec/latent/``) has a ``config.py`` that defines its
config dataclass, its named presets and one ``FAMILY = FamilySpec(...)``; ``inrv.encoded.FAMILIES``
names the package. ``codec/config.py`` (presets, ``make_config``) and ``codec/base.py``
(``get_model``) read every family from there, so a new family is one new package and one line in
``FAMILIES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


def _same(d: dict[str, Any]) -> dict[str, Any]:
    return d


@dataclass(frozen=True)
class FamilySpec:
    """A model family's declaration.

    Attributes:
        name: the family id (a key of ``inrv.encoded.FAMILIES``; stored in every file).
        config: its config dataclass (frozen; plain msgpack-able fields; a ``model`` field = ``name``).
        presets: named configs of this family (preset names are unique across families).
        model: ``"module:class"`` of the class with ``fit``/``render``, imported (with torch) on first use.
        upgrade: stored config dict -> the same with the fields that older payloads lack filled in with
            the values they meant then (files are forever: a default may change, an old file may not).
        normalise: config overrides -> the same in canonical form (e.g. the paper's ``ds="1/2"``).
        uses_device: whether encoding runs on a torch device (False: numpy only, ``--device`` is not
            checked and torch is not imported).
    """

    name: str
    config: type
    presets: dict[str, Any]
    model: str
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] = field(default=_same)
    normalise: Callable[[dict[str, Any]], dict[str, Any]] = field(default=_same)
    uses_device: bool = True

    def load_model(self) -> Any:
        """An instance of the family's model class (imports its module, and torch)."""
        module, attr = self.model.split(":")
        return getattr(importlib.import_module(module), attr)()
