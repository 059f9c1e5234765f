"""Streaming the paper model's decoder over slabs of low-res rows (bounded memory), with the
full-res queries of a slab spread over worker threads; the training windows use the same row maps."""

from __future__ import annotations

import numpy as np

from .config import PaperConfig
RENDER_CHUNK = 65536


def halo_rows(cfg: PaperConfig) -> int:
    """Low-res rows of context the SRNO encoder needs on each side (one per 3x3x3 conv)."""
    return 2 + 2 * int(cfg.res_blocks)


def _slab_rows(m0: int, n0: int, c0: int, c1: int) -> tuple[int, int]:
    """Full-res rows (of ``n0``) whose lower low-res neighbour row (clamped at 0) lies in ``[c0, c1)``."""
    i = np.arange(n0)
    low = np.maximum(np.floor((i + 0.5) * m0 / n0 - 0.5), 0).astype(np.int64)
    sel = np.nonzero((low >= c0) & (low < c1))[0]
    return (int(sel[0]), int(sel[-1]) + 1) if len(sel) else (0, 0)


def _window(m0: int, c0: int, c1: int, halo: int) -> tuple[int, int]:
    """Low-res rows needed to decode core ``[c0, c1)`` exactly: the core, one more row, the conv halo."""
    return max(0, c0 - halo), min(m0, c1 + 1 + halo)


def _query_window(net, feat, zf, e0: int, w: int, lr_shape, idx, shape):
    """SRNO values at full-res flat indices ``idx`` of grid ``shape`` from features of low-res rows
    ``e0:e0+w``: axis-0 coordinates are re-expressed in the window so the result equals the whole grid's."""
    from .siren import index_coords

    c = index_coords(idx, shape)
    m0, n0 = int(lr_shape[0]), int(shape[0])
    if e0 == 0 and w == m0:
        return net.srno.query(feat, zf, lr_shape, c, shape)
    i0 = (idx // (int(shape[1]) * int(shape[2]))).to(c.dtype)
    u = (i0 + 0.5) * (m0 / n0) - 0.5
    c = _with_axis0(c, 2 * (u - e0 + 0.5) / w - 1)
    return net.srno.query(feat, zf, (w, int(lr_shape[1]), int(lr_shape[2])), c, (n0 * w / m0, shape[1], shape[2]))


def _with_axis0(c, col0):
    import torch

    return torch.cat([col0[:, None], c[:, 1:]], dim=1)


def _amp(dev, cfg: PaperConfig):
    import contextlib

    import torch

    if dev.type == "cuda" and bool(cfg.amp):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _slab_cores(m0: int, m1: int, m2: int, max_cells: int, halo: int):
    """Cores ``[c0, c1)`` tiling the low-res rows so that each decode window stays under ``max_cells``."""
    t = max(1, int(max_cells) // max(1, m1 * m2) - 2 * halo - 1)
    return [(c, min(m0, c + t)) for c in range(0, m0, t)]


def _query_range(net, feat, zf, e0: int, w: int, lr_shape, out_shape, lo: int, hi: int, out: np.ndarray,
                 device, chunk: int, amp, workers: int = 1) -> None:
    """Decode full-res flat indices ``lo:hi`` of ``out_shape`` into ``out[lo:hi]`` from the features of
    low-res rows ``e0:e0+w``, in chunks of ``chunk`` points. ``workers`` > 1 (CPU only): the chunks are
    shared among that many threads running one torch thread each, which keeps both cores of a
    2-core machine busy on these small operations better than torch's own threads do (chunks are
    independent, so the values do not change)."""
    import torch

    def run(s: int) -> None:
        with torch.no_grad():           # grad mode is per thread
            idx = torch.arange(s, min(hi, s + chunk), device=device)
            with amp:
                v = _query_window(net, feat, zf, e0, w, lr_shape, idx, out_shape)
            out[s:s + len(idx)] = v.float().cpu().numpy()

    starts = range(lo, hi, chunk)
    workers = min(int(workers), len(starts))
    if workers <= 1 or device.type != "cpu":
        for s in starts:
            run(s)
        return
    from concurrent.futures import ThreadPoolExecutor

    own = torch.get_num_threads()
    ex = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    try:
        for _ in ex.map(run, starts):
            pass
    finally:
        ex.shutdown(wait=True, cancel_futures=True)     # on an error or Ctrl-C: no queued chunk starts
        torch.set_num_threads(own)      # in case this build's thread setting is process-wide


def _predict(net, lr_shape, out_shape, device, chunk: int | None = None, cfg: PaperConfig | None = None,
             max_cells: int | None = None) -> np.ndarray:
    """Decode the whole ``out_shape`` grid, streaming: the low-res rows are cut into slabs (at most
    ``max_cells`` low-res cells each, plus the encoder's halo), and each slab's full-res voxels are
    queried in chunks of ``chunk`` points (on the CPU spread over ``torch.get_num_threads()`` worker
    threads, see :func:`_query_range`). The result equals decoding everything at once."""
    import torch

    chunk = RENDER_CHUNK if chunk is None else chunk
    m0, m1, m2 = (int(v) for v in lr_shape)
    halo = halo_rows(cfg) if cfg is not None else 6
    cores = _slab_cores(m0, m1, m2, max_cells or (cfg.max_lr_cells if cfg is not None else 1 << 21), halo)
    n0, n1, n2 = (int(v) for v in out_shape)
    plane = n1 * n2
    out = np.empty(n0 * plane, dtype=np.float32)
    amp = _amp(device, cfg) if cfg is not None else _amp(device, PaperConfig(amp=False))
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    with torch.no_grad():
        for c0, c1 in cores:
            r0, r1 = _slab_rows(m0, n0, c0, c1)
            if r1 <= r0:
                continue
            e0, e1 = _window(m0, c0, c1, halo)
            z = net.lowres_rows(e0, e1, lr_shape).float()
            with amp:
                feat = net.srno.encoder(z)
            zf = z.reshape(-1)
            _query_range(net, feat, zf, e0, e1 - e0, lr_shape, out_shape, r0 * plane, r1 * plane, out, device,
                         chunk, amp, workers)
    return out.reshape(out_shape)
