"""The summary that :func:`inrv.compress` and :func:`inrv.info` return: a fixed, documented schema.

``Summary`` holds the facts every caller needs as typed fields (no searching a dict for a metric), and
the whole ``inrv info`` document in ``details``. ``to_dict()`` is exactly what ``inrv info --json`` and
``inrv encode --json`` print (schema ``inrv-info/1``, fields listed in ``docs/cli.md``), plus ``seconds``
after a ``compress``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .formats.jsonsafe import jsonable, number


@dataclass(frozen=True)
class Summary:
    """What one ``.inrv`` file holds, measured from the file itself.

    ========================  =================================================================
    ``path``                  the ``.inrv`` file (None when read from bytes)
    ``model``                 model family (``"latent"``, ``"paper"``)
    ``shape``, ``dtype``      the original grid (x, y, z) and voxel type
    ``file_bytes``            the real file size, header and container included
    ``raw_bytes``, ``ratio``  the uncompressed size and ``raw_bytes / file_bytes``
    ``bpv``                   bits per voxel from the real file size: ``8 * file_bytes / voxels``
    ``psnr``                  dB at encode time, peak = data range (``inf``: exact); None if not recorded
    ``ssim``, ``max_abs_err``  measured at encode time; None if not recorded
    ``encode_seconds``        fit time recorded in the file; None if not recorded
    ``device``                where it was encoded; None if not recorded
    ``seconds``               wall time of the :func:`inrv.compress` call (None from :func:`inrv.info`)
    ``details``               the whole ``inrv info`` document (geometry, intensity, config, layout ...)
    ========================  =================================================================
    """

    path: str | None
    model: str
    shape: tuple[int, int, int]
    dtype: str
    file_bytes: int
    raw_bytes: int
    ratio: float
    bpv: float
    psnr: float | None = None
    ssim: float | None = None
    max_abs_err: float | None = None
    encode_seconds: float | None = None
    device: str | None = None
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_info(cls, info: dict[str, Any], *, seconds: float | None = None) -> "Summary":
        """Build it from an ``inrv_info`` dict (``formats.inrvfile``)."""
        m = info.get("metrics") or {}
        device = m.get("device")
        return cls(path=info.get("path"), model=str(info["model"]), shape=tuple(int(v) for v in info["shape"]),
                   dtype=str(info["dtype"]), file_bytes=int(info["file_bytes"]), raw_bytes=int(info["raw_bytes"]),
                   ratio=float(info["ratio"]), bpv=float(info["bpv"]), psnr=number(m.get("psnr")),
                   ssim=number(m.get("ssim")), max_abs_err=number(m.get("max_abs_err")),
                   encode_seconds=number(m.get("encode_seconds")),
                   device=device if isinstance(device, str) else None, seconds=seconds, details=dict(info))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (strict JSON: non-finite numbers as ``"inf"`` ...): the ``inrv info`` fields,
        plus ``seconds`` after a compress."""
        d = dict(self.details)
        if self.seconds is not None:
            d["seconds"] = self.seconds
        return jsonable(d)


__all__ = ["Summary"]
