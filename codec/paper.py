"""The paper's model as a codec family: k-space downsampling -> SIREN on the low-res grid -> 3D SRNO.

``PaperModel().fit(array, PaperConfig(...))`` trains SIREN + SRNO end to end on one volume and returns
an :class:`~inrv.codec.base.Encoded` holding the 8-bit quantised weights; ``render`` rebuilds the
network from those bytes and decodes the volume on its own grid or at any other ``shape``.
See ``docs/model-paper.md`` for the design, measurements and departures from the paper.

Training: optionally ``lr_prefit_steps`` SIREN-only steps fitting the k-space low-res volume; then per
step the SIREN is evaluated on every low-res cell centre, giving the latent low-res
volume ``z``; the SRNO encoder turns ``z`` into features; ``points_per_step`` random full-res voxels
are decoded and compared with the data. Loss = ``L1(SR, data) + lr_loss_weight * L1(z, kspace_lr)``
where ``kspace_lr`` is the k-space downsampled volume. Data are normalised to [0, 1] with the
volume's (min, max); the decoded output is clipped to that range.

Whole volumes (``PaperConfig.block``, ``max_lr_cells``, ``amp``): the low-res grid is cut into blocks of
about ``block`` full-res voxels, one SIREN per non-constant block, all evaluated at once
(:class:`~inrv.codec.siren.BlockSiren`, batched matmuls) and assembled into the whole low-res grid that
the one shared SRNO reads; training and decoding stream over slabs of low-res rows so memory stays
bounded. One block in all is exactly the single-SIREN model above. See "Whole volumes" in
docs/model-paper.md.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from .base import Encoded, Progress
from .config import PaperConfig, config_from_dict, config_to_dict
from .downsample import kspace_downsample, lowres_shape

# sanity limits for configs read back from files (a hostile file must not make us build a huge net)
_LIMITS = {"sn": 4096, "siren_layers": 64, "nc": 256, "res_blocks": 64, "attn_width": 1024, "attn_heads": 1024,
           "attn_blocks": 64, "mlp_width": 4096}
RENDER_CHUNK = 65536
MAX_RENDER_VOXELS = 1 << 34
FLOAT_PSNR_VOXELS = 1 << 22


class Partition:
    """How the low-res grid is cut into blocks, one SIREN each (see "Whole volumes" in docs/model-paper.md).

    ``bl``: block size in low-res cells per axis (about ``block // ds``, see :func:`block_lr_size`);
    ``grid``: blocks per axis (``ceil(m / bl)``; the last block of an axis may stick out of the volume,
    its extra cells are evaluated and dropped); ``active``: bool per block (C order), False for blocks
    whose full-res content is constant; ``const``: the normalised value of those blocks.
    ``legacy`` (one block in all): the original single-SIREN network, stored exactly as before.
    """

    def __init__(self, lr_shape, bl, active: np.ndarray, const: np.ndarray, legacy: bool):
        self.lr_shape = tuple(int(v) for v in lr_shape)
        self.bl = tuple(int(v) for v in bl)
        self.grid = tuple(-(-m // b) for m, b in zip(self.lr_shape, self.bl))
        self.active = np.asarray(active, bool).reshape(-1)
        self.const = np.asarray(const, np.float32).reshape(-1)
        self.legacy = bool(legacy)

    @property
    def nblocks(self) -> int:
        return math.prod(self.grid)

    def to_config(self) -> dict:
        return {"bl": list(self.bl), "grid": list(self.grid), "active": int(self.active.sum())}

    def section(self) -> bytes:
        """Block map: one uint8 per block (1 = has a SIREN), then float32 LE constants of all blocks."""
        return self.active.astype(np.uint8).tobytes() + self.const.astype("<f4").tobytes()


def block_lr_size(lr_shape, ds, block: int) -> tuple[int, ...]:
    """Block size in low-res cells per axis: ``ceil(m / k)`` with ``k = ceil(m / (block // ds))`` blocks,
    i.e. at most ``block`` full-res voxels, spread evenly so the last block wastes few padded cells."""
    if not block:
        return tuple(int(m) for m in lr_shape)
    out = []
    for m, f in zip(lr_shape, ds):
        k = -(-int(m) // max(1, int(block) // int(f)))
        out.append(-(-int(m) // k))
    return tuple(out)


def make_partition(norm: np.ndarray, lr_shape, ds, block: int) -> Partition:
    """Partition for a normalised volume: blocks whose full-res voxels are all equal get no SIREN."""
    bl = block_lr_size(lr_shape, ds, block)
    grid = tuple(-(-m // b) for m, b in zip(lr_shape, bl))
    if math.prod(grid) == 1:
        return Partition(lr_shape, bl, np.ones(1, bool), np.zeros(1, np.float32), legacy=True)
    hb = [b * int(f) for b, f in zip(bl, ds)]                 # block edge in full-res voxels
    pad = [(0, g * h - n) if g * h >= n else (0, 0) for g, h, n in zip(grid, hb, norm.shape)]
    x = np.pad(norm, pad, mode="edge")[:grid[0] * hb[0], :grid[1] * hb[1], :grid[2] * hb[2]]
    x = x.reshape(grid[0], hb[0], grid[1], hb[1], grid[2], hb[2])
    lo = x.min(axis=(1, 3, 5)).reshape(-1)
    hi = x.max(axis=(1, 3, 5)).reshape(-1)
    active = hi > lo
    const = np.where(active, 0.0, lo).astype(np.float32)
    return Partition(lr_shape, bl, active, const, legacy=False)


def _build(cfg: PaperConfig, part: Partition | None = None):
    """The network; with a multi-block ``part`` the SIREN is a :class:`~inrv.codec.siren.BlockSiren`."""
    import torch
    from torch import nn

    from .siren import BlockSiren, Siren, grid_coords
    from .srno import SRNO3D

    class PaperNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.part = part if part is not None and not part.legacy else None
            if self.part is None:
                self.siren = Siren(cfg.sn, cfg.siren_layers, cfg.omega0)
            else:
                p = self.part
                self.bsiren = BlockSiren(int(p.active.sum()), cfg.sn, cfg.siren_layers, cfg.omega0)
                slot = np.full(p.nblocks, -1, np.int64)
                slot[p.active] = np.arange(int(p.active.sum()))
                self.register_buffer("slot", torch.from_numpy(slot), persistent=False)
                self.register_buffer("const", torch.from_numpy(p.const.copy()), persistent=False)
                self.register_buffer("bcoords", grid_coords(p.bl), persistent=False)
            self.srno = SRNO3D(cfg.nc, cfg.res_blocks, cfg.attn_width, cfg.attn_heads, cfg.attn_blocks, cfg.mlp_width)

        def lowres(self, lr_coords: torch.Tensor, lr_shape) -> torch.Tensor:
            """Single-SIREN network: the latent low-res volume at ``lr_coords``."""
            return self.siren(lr_coords).reshape(tuple(lr_shape))

        def lowres_rows(self, e0: int, e1: int, lr_shape) -> torch.Tensor:
            """Latent low-res rows ``e0:e1`` (axis 0) of the whole grid ``lr_shape``."""
            if self.part is None:
                m = tuple(int(v) for v in lr_shape)
                dev = next(self.parameters()).device
                if e0 == 0 and e1 == m[0]:
                    return self.lowres(grid_coords(m, device=dev), m)
                c = grid_coords((e1 - e0, m[1], m[2]), device=dev)   # rows e0:e1 in whole-grid units
                c[:, 0] = (c[:, 0] + 1) * ((e1 - e0) / m[0]) + (2 * e0 / m[0] - 1)
                return self.lowres(c, (e1 - e0, m[1], m[2]))
            p = self.part
            (b0, b1, b2), (g0, g1, g2) = p.bl, p.grid
            r0, r1 = e0 // b0, -(-e1 // b0)
            ids = torch.arange(r0 * g1 * g2, r1 * g1 * g2, device=self.slot.device)
            slot = self.slot[ids]
            vals = self.const[ids][:, None].expand(len(ids), self.bcoords.shape[0])
            act = slot >= 0
            if bool(act.any()):
                out = self.bsiren(slot[act], self.bcoords)        # (nact, cells)
                vals = vals.clone()
                vals[act] = out.to(vals.dtype)
            z = vals.reshape(r1 - r0, g1, g2, b0, b1, b2).permute(0, 3, 1, 4, 2, 5)
            z = z.reshape((r1 - r0) * b0, g1 * b1, g2 * b2)
            return z[e0 - r0 * b0:e1 - r0 * b0, :p.lr_shape[1], :p.lr_shape[2]]

        def forward(self, lr_coords, lr_shape, coords, out_shape):
            """(latent low-res volume, decoded values at ``coords``)."""
            z = self.lowres(lr_coords, lr_shape) if self.part is None else self.lowres_rows(0, lr_shape[0], lr_shape)
            return z, self.srno(z, coords, out_shape)

    return PaperNet()


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


def count_params(cfg: PaperConfig, sirens: int = 1) -> int:
    """Total parameters of ``sirens`` SIRENs (one per active block) + SRNO for ``cfg`` (closed form,
    see siren.py / srno.py)."""
    from .siren import siren_params
    from .srno import srno_params

    return sirens * siren_params(cfg.sn, cfg.siren_layers) + srno_params(cfg.nc, cfg.res_blocks, cfg.attn_width,
                                                                 cfg.attn_blocks, cfg.mlp_width)


def _check_config(cfg: PaperConfig) -> None:
    for name, hi in _LIMITS.items():
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise InputError(f"paper model option {name}={v!r} out of range 1..{hi}")
    if cfg.attn_width % cfg.attn_heads:
        raise InputError(f"attn_width {cfg.attn_width} must be divisible by attn_heads {cfg.attn_heads}")
    ds = cfg.ds
    if not (isinstance(ds, (tuple, list)) and len(ds) == 3 and all(isinstance(f, int) and 1 <= f <= 64 for f in ds)):
        raise InputError(f"ds must be 3 factors in 1..64, got {ds!r}")
    if not isinstance(cfg.steps, int) or cfg.steps < 0 or not isinstance(cfg.lr_prefit_steps, int) \
            or cfg.lr_prefit_steps < 0 or not isinstance(cfg.qat_steps, int) or cfg.qat_steps < 0:
        raise InputError("steps, lr_prefit_steps and qat_steps must be integers >= 0")
    if cfg.points_per_step is not None and (not isinstance(cfg.points_per_step, int) or cfg.points_per_step < 0):
        raise InputError(f"points_per_step must be a positive integer or None, got {cfg.points_per_step!r}")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise InputError(f"lr must be a positive number, got {cfg.lr!r}")
    if not (isinstance(cfg.lr_loss_weight, (int, float)) and math.isfinite(cfg.lr_loss_weight) and cfg.lr_loss_weight >= 0):
        raise InputError(f"lr_loss_weight must be a number >= 0, got {cfg.lr_loss_weight!r}")
    if not isinstance(cfg.block, int) or isinstance(cfg.block, bool) or not 0 <= cfg.block <= 1 << 20:
        raise InputError(f"block must be 0 (one SIREN) or a block edge in voxels, got {cfg.block!r}")
    if not isinstance(cfg.max_lr_cells, int) or cfg.max_lr_cells < 1:
        raise InputError(f"max_lr_cells must be a positive integer, got {cfg.max_lr_cells!r}")
    if not 2 <= int(cfg.weight_bits) <= 16:
        raise InputError(f"weight_bits must be 2..16, got {cfg.weight_bits}")
    if not (isinstance(cfg.omega0, (int, float)) and math.isfinite(cfg.omega0) and cfg.omega0 > 0):
        raise InputError(f"omega0 must be a positive number, got {cfg.omega0!r}")


def _as_volume(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise InputError(f"expected a 3D volume, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise InputError(f"empty volume {tuple(arr.shape)}")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"unsupported voxel type {arr.dtype}: need real numbers")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise InputError("the volume holds NaN or infinite values")
    return arr


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


class PaperModel:
    name = "paper"

    def fit(self, data: Any, config: PaperConfig, *, device: str | None = None,
            progress: Progress | None = None) -> Encoded:
        import torch

        from .device import resolve_device, seed_everything, tune_cpu_allocator
        from .quant import quantize_state

        if not isinstance(config, PaperConfig):
            raise InputError(f"the paper model needs a PaperConfig, got {type(config).__name__}")
        _check_config(config)
        arr = _as_volume(data)
        shape = tuple(int(s) for s in arr.shape)
        ds = tuple(int(f) for f in config.ds)
        lr_shape = lowres_shape(shape, ds)
        lo, hi = float(arr.min()), float(arr.max())
        span = hi - lo if hi > lo else 1.0
        norm = (arr - lo) / span
        lr_target = kspace_downsample(norm, ds)

        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        seed_everything(config.seed)
        part = make_partition(norm, lr_shape, ds, int(config.block))
        net = _build(config, part).to(dev)
        hr = torch.from_numpy(norm.reshape(-1)).to(dev)
        lr_t = torch.from_numpy(lr_target).to(dev)
        total = hr.numel()
        m0, m1, m2 = lr_shape
        n0, plane = shape[0], shape[1] * shape[2]
        halo = halo_rows(config)
        whole = m0 * m1 * m2 <= int(config.max_lr_cells)
        # windowed training (large volumes): a random slab of low-res rows per step, thick enough to
        # hold max_lr_cells cells with the encoder's halo; loss points come from the slab's core only
        core_t = m0 if whole else max(1, int(config.max_lr_cells) // (m1 * m2) - 2 * halo - 1)
        pts_cap = total if whole else min(total, core_t * int(math.ceil(n0 / m0)) * plane)
        pts = pts_cap if not config.points_per_step or config.points_per_step >= pts_cap else int(config.points_per_step)
        gen = torch.Generator(device=dev).manual_seed(int(config.seed))
        rng = np.random.default_rng(int(config.seed))
        opt = torch.optim.Adam(net.parameters(), lr=float(config.lr))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        steps = int(config.steps)
        every = max(1, steps // 200)
        t0 = time.perf_counter()
        loss_v = float("nan")
        lam = float(config.lr_loss_weight)
        amp = _amp(dev, config)

        def pick_window():
            """(e0, e1, r0, r1): low-res window rows and the full-res rows whose loss it can give exactly."""
            if whole:
                return 0, m0, 0, n0
            while True:
                c0 = int(rng.integers(0, max(1, m0 - core_t + 1)))
                c1 = min(m0, c0 + core_t)
                r0, r1 = _slab_rows(m0, n0, c0, c1)
                if r1 > r0:
                    e0, e1 = _window(m0, c0, c1, halo)
                    return e0, e1, r0, r1

        def loss_on(params_net, e0, e1, r0, r1, chunks, npts):
            """Forward + backward of the HR L1 (and low-res L1) terms; returns the loss value."""
            z = params_net.lowres_rows(e0, e1, lr_shape)
            with amp:
                feat = params_net.srno.encoder(z)
            zf = z.reshape(-1)
            value = 0.0
            for i, idx in enumerate(chunks):
                with amp:
                    pred = _query_window(params_net, feat, zf, e0, e1 - e0, lr_shape, idx, shape).float()
                part_l = (pred - hr[idx]).abs().sum() / npts
                part_l.backward(retain_graph=i < len(chunks) - 1 or lam != 0)
                value += float(part_l.detach())
            if lam:
                extra = lam * (z - lr_t[e0:e1]).abs().mean()
                extra.backward()
                value += float(extra.detach())
            return value

        def sample(r0, r1, npts):
            lo_i, hi_i = r0 * plane, r1 * plane
            if npts < hi_i - lo_i:
                return [lo_i + torch.randint(0, hi_i - lo_i, (npts,), device=dev, generator=gen)]
            return [torch.arange(s, min(hi_i, s + RENDER_CHUNK), device=dev) for s in range(lo_i, hi_i, RENDER_CHUNK)]

        def train_step() -> float:
            """One optimiser step; returns the loss. With all query points the HR term is
            back-propagated in chunks of RENDER_CHUNK points: the same gradient, bounded memory."""
            opt.zero_grad(set_to_none=True)
            e0, e1, r0, r1 = pick_window()
            npts = min(pts, (r1 - r0) * plane)
            value = loss_on(net, e0, e1, r0, r1, sample(r0, r1, npts), npts)
            opt.step()
            return value

        siren_params = [p for n, p in net.named_parameters() if not n.startswith("srno.")]
        has_siren = part.legacy or bool(part.active.any())
        prefit = max(0, int(config.lr_prefit_steps)) if has_siren else 0
        if prefit:
            # stage 1: fit the SIREN(s) alone to the k-space low-res volume (cheap: no SRNO, low-res grid only)
            opt_s = torch.optim.Adam(siren_params, lr=float(config.lr))
            for _ in range(prefit):
                e0, e1, _, _ = pick_window()
                opt_s.zero_grad(set_to_none=True)
                (net.lowres_rows(e0, e1, lr_shape) - lr_t[e0:e1]).abs().mean().backward()
                opt_s.step()
        for step in range(1, steps + 1):
            loss_v = train_step()
            if progress is not None and (step % every == 0 or step == steps):
                progress(step, steps, {"loss": loss_v})
        train_seconds = time.perf_counter() - t0

        float_state = {k: v.detach().cpu().numpy() for k, v in net.named_parameters()}
        if config.qat_steps > 0:
            # short quantisation-aware fine-tune: forward with fake-quantised weights, update the floats
            from .quant import fake_quantize

            params = dict(net.named_parameters())
            opt_q = torch.optim.Adam(params.values(), lr=float(config.lr) * 0.1)
            saved = {k: p.detach().clone() for k, p in params.items()}
            for _ in range(int(config.qat_steps)):
                opt_q.zero_grad(set_to_none=True)
                # swap in the fake-quantised values, take the gradient there, apply it to the floats
                with torch.no_grad():
                    for k, p in params.items():
                        saved[k].copy_(p)
                        p.copy_(fake_quantize(p, int(config.weight_bits)))
                e0, e1, r0, r1 = pick_window()
                npts = min(pts, (r1 - r0) * plane)
                loss_on(net, e0, e1, r0, r1, sample(r0, r1, npts), npts)
                with torch.no_grad():
                    for k, p in params.items():
                        p.copy_(saved[k])
                opt_q.step()
        peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0

        # the float model's PSNR costs one more full decode: only for volumes up to FLOAT_PSNR_VOXELS
        recon_float = _predict(net, lr_shape, shape, dev, cfg=config) if total <= FLOAT_PSNR_VOXELS else None
        payload, meta = quantize_state({k: v.detach().cpu().numpy() for k, v in net.named_parameters()},
                                       int(config.weight_bits))
        cfg_dict = config_to_dict(config)
        cfg_dict.update({"lr_shape": list(lr_shape), "quant": meta})
        sections = {"weights": payload}
        if not part.legacy:
            cfg_dict["partition"] = part.to_config()
            sections["blockmap"] = part.section()
        enc = Encoded(model=self.name, config=cfg_dict, sections=sections, shape=shape,
                      value_range=(lo, hi), stats={})
        recon_q = self.render(enc, device=str(dev))
        enc.reconstruction = recon_q
        float_psnr = None if recon_float is None else _psnr01(norm, np.clip(recon_float, 0, 1))
        del recon_float
        enc.stats = {
            "steps": steps, "train_seconds": train_seconds, "device": str(dev), "params": sum(int(v.size) for v in float_state.values()), "loss": loss_v,
            "points_per_step": pts, "psnr_float": float_psnr, "psnr_quantised": _psnr01(norm, recon_q, lo, span),
            "peak_gpu_bytes": peak, "lr_shape": list(lr_shape),
            "blocks": part.nblocks, "active_blocks": int(part.active.sum()),
        }
        return enc

    def render(self, encoded: Encoded, *, shape: tuple[int, ...] | None = None,
               device: str | None = None) -> np.ndarray:
        import torch

        from .device import resolve_device, tune_cpu_allocator
        from .quant import dequantize_state

        if encoded.model != self.name:
            raise FormatError(f"not a paper-model stream: {encoded.model!r}")
        try:
            cfg = config_from_dict(encoded.config)
        except (TypeError, ValueError) as e:
            raise FormatError(f"bad paper-model config: {e}") from None
        if not isinstance(cfg, PaperConfig):
            raise FormatError("paper stream with a non-paper config")
        try:
            _check_config(cfg)
            src_shape = tuple(int(s) for s in encoded.shape)
            if len(src_shape) != 3 or min(src_shape) < 1:
                raise InputError(f"bad fitted shape {encoded.shape!r}")
            lr_shape = lowres_shape(src_shape, tuple(int(f) for f in cfg.ds))
        except (InputError, TypeError, ValueError) as e:
            raise FormatError(f"bad paper-model config: {e}") from None
        if list(lr_shape) != list(encoded.config.get("lr_shape", [])):
            raise FormatError(f"paper stream: low-res shape {encoded.config.get('lr_shape')} does not match {lr_shape}")
        out_shape = src_shape if shape is None else tuple(int(s) for s in shape)
        if len(out_shape) != 3 or min(out_shape) < 1:
            raise InputError(f"output shape must be 3 positive sizes, got {shape!r}")
        if math.prod(out_shape) > MAX_RENDER_VOXELS:
            raise InputError(f"output shape {out_shape} exceeds {MAX_RENDER_VOXELS} voxels")
        if "weights" not in encoded.sections:
            raise FormatError("paper stream has no 'weights' section")
        state = dequantize_state(encoded.sections["weights"], encoded.config.get("quant"))
        part = _read_partition(encoded, cfg, lr_shape)
        if part is not None and int(part.active.sum()) > len(encoded.sections["weights"]):
            raise FormatError("paper stream: more blocks than stored weights")
        dev = resolve_device(device)
        tune_cpu_allocator(dev)
        net = _build(cfg, part)
        own = dict(net.named_parameters())
        if set(own) != set(state) or any(tuple(own[k].shape) != state[k].shape for k in own):
            raise FormatError("paper stream: stored weights do not match the architecture in its config")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(torch.from_numpy(state[k]))
        net = net.to(dev).eval()
        lo, hi = (float(v) for v in encoded.value_range)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            raise FormatError(f"bad value range {encoded.value_range!r}")
        if hi == lo:
            return np.full(out_shape, lo, dtype=np.float32)
        y = _predict(net, lr_shape, out_shape, dev, cfg=cfg)
        np.clip(y, 0.0, 1.0, out=y)     # in place: no volume-sized temporaries
        y *= np.float32(hi - lo)
        y += np.float32(lo)
        return y


def _read_partition(encoded: Encoded, cfg: PaperConfig, lr_shape) -> Partition | None:
    """The block partition recorded in a stream (None: a single-SIREN stream, as before blocks)."""
    pc = encoded.config.get("partition")
    if pc is None:
        return None
    try:
        bl = tuple(int(v) for v in pc["bl"])
        grid = tuple(int(v) for v in pc["grid"])
    except (TypeError, ValueError, KeyError):
        raise FormatError("paper stream: bad partition record") from None
    if len(bl) != 3 or bl != block_lr_size(lr_shape, cfg.ds, int(cfg.block)) \
            or grid != tuple(-(-m // b) for m, b in zip(lr_shape, bl)):
        raise FormatError(f"paper stream: partition {pc!r} does not match the volume's low-res grid {lr_shape}")
    nb = math.prod(grid)
    raw = encoded.sections.get("blockmap")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != 5 * nb:
        raise FormatError(f"paper stream: block map must hold {5 * nb} bytes")
    mask = np.frombuffer(bytes(raw[:nb]), np.uint8)
    const = np.frombuffer(bytes(raw[nb:]), "<f4").astype(np.float32)
    if mask.max(initial=0) > 1 or not np.all(np.isfinite(const)) or int(mask.sum()) != pc.get("active"):
        raise FormatError("paper stream: corrupt block map")
    return Partition(lr_shape, bl, mask.astype(bool), const, legacy=False)


def _psnr01(ref: np.ndarray, test: np.ndarray, lo: float = 0.0, span: float = 1.0) -> float:
    """PSNR of [0, 1] data ``ref`` against ``(test - lo) / span``, accumulated over slabs (no volume-sized
    temporaries)."""
    sq = 0.0
    for i in range(0, ref.shape[0], 8):
        t = test[i:i + 8]
        if lo != 0.0 or span != 1.0:
            t = (t - np.float32(lo)) / np.float32(span)
        d = ref[i:i + 8].astype(np.float64) - t
        sq += float(np.sum(d * d))
    mse = sq / max(1, ref.size)
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
