"""Fitting the paper model to one volume, phase by phase on one :class:`PaperFit` state.

:func:`fit_volume` runs: :func:`prepare` (normalise, k-space low-res target, block partition,
network), :func:`prefit` (the SIREN(s) alone on the low-res target), :func:`train` (end to end: HR L1 on
random full-res points of a window of low-res rows, plus ``lr_loss_weight`` times the low-res L1),
:func:`qat` (optional quantisation-aware fine-tune) and :func:`store` (8-bit weights -> ``Encoded``,
decoded once to measure).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..base import Encoded, Progress
from ..config import config_to_dict
from ..device import seed_everything
from . import slabs
from .config import PaperConfig
from .downsample import kspace_downsample, lowres_shape
from .network import PaperNet, _build
from .partition import Partition, make_partition
from .slabs import _amp, _predict, _query_window, _slab_rows, _window, halo_rows

# the float model's PSNR costs one more full decode: only for volumes up to this many voxels
FLOAT_PSNR_VOXELS = 1 << 22


@dataclass
class PaperFit:
    """What the phases of one fit share: the config, device and network; the normalised volume
    ``norm`` (flat on the device: ``hr``) with ``value_range``, the low-res target ``lr_t``; the
    windowing of large volumes (``whole``; else ``core_t`` low-res rows per step plus the encoder's
    ``halo``), ``pts`` query points per step, and the generators of every random draw."""

    cfg: PaperConfig
    dev: torch.device
    net: PaperNet
    part: Partition
    shape: tuple[int, int, int]
    lr_shape: tuple[int, int, int]
    norm: np.ndarray
    value_range: tuple[float, float]
    hr: torch.Tensor
    lr_t: torch.Tensor
    halo: int
    whole: bool
    core_t: int
    pts: int
    gen: torch.Generator
    rng: np.random.Generator
    amp: Any

    @property
    def plane(self) -> int:
        return self.shape[1] * self.shape[2]

    def pick_window(self) -> tuple[int, int, int, int]:
        """(e0, e1, r0, r1): low-res window rows and the full-res rows whose loss it can give exactly."""
        m0, n0 = self.lr_shape[0], self.shape[0]
        if self.whole:
            return 0, m0, 0, n0
        while True:
            c0 = int(self.rng.integers(0, max(1, m0 - self.core_t + 1)))
            c1 = min(m0, c0 + self.core_t)
            r0, r1 = _slab_rows(m0, n0, c0, c1)
            if r1 > r0:
                e0, e1 = _window(m0, c0, c1, self.halo)
                return e0, e1, r0, r1

    def sample(self, r0: int, r1: int, npts: int) -> list[torch.Tensor]:
        """Flat full-res indices of this step's loss: ``npts`` random ones of rows ``[r0, r1)``, or all
        of them in chunks of ``RENDER_CHUNK``."""
        lo_i, hi_i = r0 * self.plane, r1 * self.plane
        if npts < hi_i - lo_i:
            return [lo_i + torch.randint(0, hi_i - lo_i, (npts,), device=self.dev, generator=self.gen)]
        chunk = slabs.RENDER_CHUNK
        return [torch.arange(s, min(hi_i, s + chunk), device=self.dev) for s in range(lo_i, hi_i, chunk)]

    def loss_on(self, e0: int, e1: int, r0: int, r1: int, chunks, npts: int) -> float:
        """Forward + backward of the HR L1 (and low-res L1) terms; returns the loss value."""
        net, lam = self.net, float(self.cfg.lr_loss_weight)
        z = net.lowres_rows(e0, e1, self.lr_shape)
        with self.amp:
            feat = net.srno.encoder(z)
        zf = z.reshape(-1)
        value = 0.0
        for i, idx in enumerate(chunks):
            with self.amp:
                pred = _query_window(net, feat, zf, e0, e1 - e0, self.lr_shape, idx, self.shape).float()
            part_l = (pred - self.hr[idx]).abs().sum() / npts
            part_l.backward(retain_graph=i < len(chunks) - 1 or lam != 0)
            value += float(part_l.detach())
        if lam:
            extra = lam * (z - self.lr_t[e0:e1]).abs().mean()
            extra.backward()
            value += float(extra.detach())
        return value

    def window_loss(self) -> float:
        """The loss (and its gradient) on one random window: ``pts`` points, or all of its rows'."""
        e0, e1, r0, r1 = self.pick_window()
        npts = min(self.pts, (r1 - r0) * self.plane)
        return self.loss_on(e0, e1, r0, r1, self.sample(r0, r1, npts), npts)


def fit_volume(arr: np.ndarray, cfg: PaperConfig, dev, progress: Progress | None = None) -> Encoded:
    """Train SIREN + SRNO on ``arr`` (float32, checked) and return the stored model."""
    st = prepare(arr, cfg, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    prefit(st)
    loss = train(st, progress)
    train_seconds = time.perf_counter() - t0
    params = sum(int(p.numel()) for p in st.net.parameters())
    qat(st)
    peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0
    enc = store(st)
    enc.stats = {"steps": int(cfg.steps), "train_seconds": train_seconds, "device": str(dev), "params": params,
                 "loss": loss, "points_per_step": st.pts, **enc.stats, "peak_gpu_bytes": peak,
                 "lr_shape": list(st.lr_shape), "blocks": st.part.nblocks,
                 "active_blocks": int(st.part.active.sum())}
    return enc


def prepare(arr: np.ndarray, cfg: PaperConfig, dev) -> PaperFit:
    """Phase 1: normalised volume, k-space low-res target, partition, network, windowing."""
    shape = tuple(int(s) for s in arr.shape)
    ds = tuple(int(f) for f in cfg.ds)
    lr_shape = lowres_shape(shape, ds)
    lo, hi = float(arr.min()), float(arr.max())
    span = hi - lo if hi > lo else 1.0
    norm = (arr - lo) / span
    lr_target = kspace_downsample(norm, ds)
    seed_everything(cfg.seed)
    part = make_partition(norm, lr_shape, ds, int(cfg.block))
    net = _build(cfg, part).to(dev)
    total = int(norm.size)
    m0, m1, m2 = lr_shape
    halo = halo_rows(cfg)
    whole = m0 * m1 * m2 <= int(cfg.max_lr_cells)
    # windowed training (large volumes): a random slab of low-res rows per step, thick enough to
    # hold max_lr_cells cells with the encoder's halo; loss points come from the slab's core only
    core_t = m0 if whole else max(1, int(cfg.max_lr_cells) // (m1 * m2) - 2 * halo - 1)
    pts_cap = total if whole else min(total, core_t * int(math.ceil(shape[0] / m0)) * shape[1] * shape[2])
    pts = pts_cap if not cfg.points_per_step or cfg.points_per_step >= pts_cap else int(cfg.points_per_step)
    return PaperFit(cfg=cfg, dev=dev, net=net, part=part, shape=shape, lr_shape=lr_shape, norm=norm,
                    value_range=(lo, hi), hr=torch.from_numpy(norm.reshape(-1)).to(dev),
                    lr_t=torch.from_numpy(lr_target).to(dev), halo=halo, whole=whole, core_t=core_t, pts=pts,
                    gen=torch.Generator(device=dev).manual_seed(int(cfg.seed)),
                    rng=np.random.default_rng(int(cfg.seed)), amp=_amp(dev, cfg))


def prefit(st: PaperFit) -> None:
    """Phase 2: ``lr_prefit_steps`` steps of the SIREN(s) alone on the k-space low-res volume (cheap:
    no SRNO, low-res grid only); skipped when every block is constant."""
    has_siren = st.part.legacy or bool(st.part.active.any())
    steps = max(0, int(st.cfg.lr_prefit_steps)) if has_siren else 0
    if not steps:
        return
    siren = [p for n, p in st.net.named_parameters() if not n.startswith("srno.")]
    opt = torch.optim.Adam(siren, lr=float(st.cfg.lr))
    for _ in range(steps):
        e0, e1, _, _ = st.pick_window()
        opt.zero_grad(set_to_none=True)
        (st.net.lowres_rows(e0, e1, st.lr_shape) - st.lr_t[e0:e1]).abs().mean().backward()
        opt.step()


def train(st: PaperFit, progress: Progress | None = None) -> float:
    """Phase 3: ``steps`` Adam steps end to end; returns the last loss. With all query points the HR
    term is back-propagated in chunks of ``RENDER_CHUNK`` points: the same gradient, bounded memory."""
    opt = torch.optim.Adam(st.net.parameters(), lr=float(st.cfg.lr))
    steps = int(st.cfg.steps)
    every = max(1, steps // 200)
    loss = float("nan")
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = st.window_loss()
        opt.step()
        if progress is not None and (step % every == 0 or step == steps):
            progress(step, steps, {"loss": loss})
    return loss


def qat(st: PaperFit) -> None:
    """Phase 4 (``qat_steps`` > 0): a short quantisation-aware fine-tune: the gradient is taken at
    the fake-quantised weights and applied to the float ones."""
    if st.cfg.qat_steps <= 0:
        return
    from ..quant import fake_quantize

    params = dict(st.net.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=float(st.cfg.lr) * 0.1)
    saved = {k: p.detach().clone() for k, p in params.items()}
    for _ in range(int(st.cfg.qat_steps)):
        opt.zero_grad(set_to_none=True)
        # swap in the fake-quantised values, take the gradient there, apply it to the floats
        with torch.no_grad():
            for k, p in params.items():
                saved[k].copy_(p)
                p.copy_(fake_quantize(p, int(st.cfg.weight_bits)))
        st.window_loss()
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])
        opt.step()


def store(st: PaperFit) -> Encoded:
    """Phase 5: the 8-bit (``weight_bits``) weights, block map and config as an ``Encoded``, decoded
    once through the decoder (kept as its ``reconstruction``); stats: the float and quantised PSNR."""
    from ..quant import quantize_state
    from .model import PaperModel     # the decoder's own path (model imports this module)

    cfg, part = st.cfg, st.part
    lo, hi = st.value_range
    recon_float = _predict(st.net, st.lr_shape, st.shape, st.dev, cfg=cfg) if st.norm.size <= FLOAT_PSNR_VOXELS \
        else None
    payload, meta = quantize_state({k: v.detach().cpu().numpy() for k, v in st.net.named_parameters()},
                                   int(cfg.weight_bits))
    cfg_dict = config_to_dict(cfg)
    cfg_dict.update({"lr_shape": list(st.lr_shape), "quant": meta})
    sections = {"weights": payload}
    if not part.legacy:
        cfg_dict["partition"] = part.to_config()
        sections["blockmap"] = part.section()
    enc = Encoded(model="paper", config=cfg_dict, sections=sections, shape=st.shape, value_range=(lo, hi), stats={})
    recon_q = PaperModel().render(enc, device=str(st.dev))
    enc.reconstruction = recon_q
    float_psnr = None if recon_float is None else _psnr01(st.norm, np.clip(recon_float, 0, 1))
    del recon_float
    span = hi - lo if hi > lo else 1.0
    enc.stats = {"psnr_float": float_psnr, "psnr_quantised": _psnr01(st.norm, recon_q, lo, span)}
    return enc


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
