"""Device selection and seeding for the torch models.

``resolve_device("auto")`` picks CUDA when present and the CPU otherwise; an explicit ``"cuda"``
that is not available raises :class:`~inrv.errors.DeviceError` (a one-line message, exit code 2)
instead of silently falling back, so a user who asked for a GPU knows they did not get one.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ..errors import DeviceError


def resolve_device(name: "str | torch.device | None" = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` if available else ``cpu``; ``"cpu"``; ``"cuda"``/``"cuda:N"``.

    Raises ``DeviceError`` for an unavailable or unknown device.
    """
    if isinstance(name, torch.device):
        name = str(name)
    key = (name or "auto").strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
        try:
            dev = torch.device(key)
        except RuntimeError:
            raise DeviceError(f"bad device name {name!r} (use auto, cpu, cuda or cuda:N)") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too) for reproducible fits."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
