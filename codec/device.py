"""Device selection and seeding for the torch models.

``resolve_device("auto")`` picks CUDA when present and the CPU otherwise; an explicit ``"cuda"``
that is not available raises :class:`~inrv.errors.DeviceError` (a one-line message, exit code 2)
instead of silently falling back, so a user who asked for a GPU knows they did not get one.
"""

from __future__ import annotations

import ctypes
import os
import random
import sys

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


_LIBC = None                # glibc, once tune_cpu_allocator has tuned it
_M_MMAP_THRESHOLD = -3      # glibc mallopt parameter


def tune_cpu_allocator(dev: "torch.device | str") -> bool:
    """Keep large tensors on the heap instead of fresh ``mmap`` pages (glibc, CPU devices only).

    glibc serves every block above 32 MiB with its own ``mmap`` and unmaps it when freed, so each
    training step pays first-touch page faults on every activation again: on a 2-core machine
    about half of a latent training step on ``mni_t1`` (rate and synthesis of one slab, forward and
    backward: 5.1 -> 2.7 s with the threshold at 1 GiB; docs/model-latent.md, "Speed"). The price: freed memory stays with the process until
    the heap top is trimmed. Called once by the models' fit and render on a CPU; does nothing on
    other platforms, for CUDA, or when ``INRV_MALLOC_TUNING=0``. Returns whether it is in effect.
    """
    global _LIBC
    if _LIBC is not None:
        return True
    if torch.device(dev).type != "cpu" or not sys.platform.startswith("linux") \
            or os.environ.get("INRV_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30):
            _LIBC = libc
    except (OSError, AttributeError):     # not glibc (musl, ...): leave the allocator alone
        pass
    return _LIBC is not None


def release_cpu_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``) after a phase that allocated a
    lot, where :func:`tune_cpu_allocator` keeps large blocks on the heap; a no-op elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too) for reproducible fits."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
