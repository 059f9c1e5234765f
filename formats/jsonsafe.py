"""The one JSON policy of inrv: what ``inrv info --json``, ``inrv encode --json`` and the batch manifest write.

:func:`jsonable` returns a copy that ``json.dumps(..., allow_nan=False)`` accepts (strict RFC 8259 JSON):

* non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"`` (a lossless PSNR stays visible);
* bytes become ``"<N bytes>"``; numpy scalars and arrays become numbers and lists; tuples become lists;
  paths and any other object become their ``str``.

Nothing here imports numpy or torch.
"""

from __future__ import annotations

import math
import os
from typing import Any


def jsonable(obj: Any) -> Any:
    """A strict-JSON copy of ``obj`` (see the module docstring for the policy)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):            # numpy scalars and arrays, without importing numpy here
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return str(obj)


def number(value: Any) -> float | None:
    """A float from a number or one of the strings :func:`jsonable` writes (``"inf"`` ...); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return None


__all__ = ["jsonable", "number"]
