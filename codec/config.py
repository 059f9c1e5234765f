"""Encoder configurations across the model families: named presets and ``make_config``.

Each family declares its config dataclass, presets and config upgrades in its own package
(``codec/<family>/config.py``: a :class:`~inrv.codec.family.FamilySpec` named ``FAMILY``, the package
named in ``inrv.encoded.FAMILIES``); this module gathers them. ``make_config("paper", steps=200)``
returns the ``paper`` preset with ``steps`` replaced. Every field is a plain value so that a config is
msgpack-able (``dataclasses.asdict``).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from ..encoded import FAMILIES
from ..errors import UsageError
from .family import FamilySpec
from .latent.config import LatentConfig
from .paper.config import PaperConfig, normalise_ds

__all__ = ["PRESETS", "DEFAULT_PRESET", "PaperConfig", "LatentConfig", "family_spec", "make_config",
           "normalise_ds", "config_to_dict", "config_from_dict", "config_from_payload"]

Config = Any    # a family's config dataclass (PaperConfig, LatentConfig, ...)


def family_spec(name: Any) -> FamilySpec | None:
    """The declaration of the model family ``name`` (None if unknown); imports no torch."""
    package = FAMILIES.get(name) if isinstance(name, str) else None
    return None if package is None else importlib.import_module(f"{package}.config").FAMILY


def _gather_presets() -> dict[str, Config]:
    out: dict[str, Config] = {}
    for name in FAMILIES:
        for key, cfg in family_spec(name).presets.items():
            if key in out:
                raise RuntimeError(f"preset {key!r} is declared by two model families")
            out[key] = cfg
    return out


#: every family's named presets (the paper's model: ``paper``, ``tiny``; the latent model: ``fast``,
#: ``balanced``, ``best``, ``latent-tiny``)
PRESETS: dict[str, Config] = _gather_presets()

# the best rate-distortion by default; the paper's model stays one option away (--preset paper, --ds/--nc/--sn)
DEFAULT_PRESET = "balanced"


def make_config(preset: str | Config | None = None, **overrides: Any) -> Config:
    """Return a preset (by name, or a config object) with ``overrides`` applied.

    Overrides whose value is ``None`` are ignored, so CLI options can be passed through as-is.
    Unknown names raise :class:`~inrv.errors.UsageError`.
    """
    if preset is None:
        preset = DEFAULT_PRESET
    if isinstance(preset, str):
        try:
            base = PRESETS[preset]
        except KeyError:
            raise UsageError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})") from None
    else:
        base = preset
    changes = {k: v for k, v in overrides.items() if v is not None}
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise UsageError(f"option(s) {', '.join(unknown)} do not apply to the {base.model!r} model")
    return dataclasses.replace(base, **family_spec(base.model).normalise(changes))


def config_to_dict(config: Config) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _spec_of(d: dict[str, Any]) -> FamilySpec:
    spec = family_spec(d.get("model"))
    if spec is None:
        raise UsageError(f"unknown model family {d.get('model')!r}")
    return spec


def config_from_dict(d: dict[str, Any]) -> Config:
    """The config object of a dict from :func:`config_to_dict` (keys it does not know are ignored)."""
    cls = _spec_of(d).config
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return cls(**kw)


def config_from_payload(d: dict[str, Any]) -> Config:
    """The config a stored payload was written with: :func:`config_from_dict` after the family's
    ``upgrade`` has filled in what older payloads leave out."""
    return config_from_dict(_spec_of(d).upgrade(dict(d)))
