"""Rerun the paper's grid (its Tables 4-6, plus the single-SIREN row of Table 2) on one NIfTI volume.

    python benchmarks/paper_tables.py --quick                  # CPU smoke scale (see --quick below)
    python benchmarks/paper_tables.py --device cuda            # full grid, 5000 steps, on a GPU
    python benchmarks/paper_tables.py --ds 2 --nc 4 --sn 30,50 --steps 1500

For every (DS, SN, NC) it fits the paper model (``inrv.codec.paper``) and, unless ``--no-siren``, a
plain SIREN (3 sine layers, width chosen so its parameter count is closest to the end-to-end
model's) on the full-res volume with the same steps, learning rate and query points per step.
Columns: params; float32 bpp = 32 * params / voxels (the paper's "Bitrate"); real bpv = 8 * bytes /
voxels of the stored stream (the real ``.inrv`` file bytes when ``inrv.formats.inrvfile.to_bytes``
is available, otherwise ``len(zstd.compress(weights + msgpack(config)))``, named in column
``bytes_from``); CR_paper = 1 - params / voxels (the paper's CR, in %); ratio = original file bits /
real bits (original bits = voxels x the source dtype's bit depth); PSNR (peak = data range) and 3D
SSIM of the decoded 8-bit-quantised model; train seconds; peak GPU memory (0 on CPU); device.

``--quick``: 60 steps, DS 2, SN 30, NC 4, 8192 query points per step: a smoke test that runs in
a few minutes on a CPU; its PSNR figures are far from converged and are labelled as such.
Writes ``<out>/paper_tables.md`` and ``<out>/paper_tables.csv`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = [Path("/work/shared/data/mni_patch64.nii.gz"), ROOT / "samples" / "mni_patch64.nii.gz"]


def _ints(s: str) -> list[int]:
    out: list[int] = []
    for part in s.split(","):
        part = part.strip()
        if ":" in part:  # a:b:step, inclusive
            a, b, *st = (int(v) for v in part.split(":"))
            out += list(range(a, b + 1, st[0] if st else 1))
        elif part:
            out.append(int(part))
    return out


def siren_width_for(params: int, layers: int = 3) -> int:
    """Width W of a plain SIREN whose parameter count is closest to ``params``."""
    from inrv.codec.siren import siren_params

    best = min(range(1, 2048), key=lambda w: abs(siren_params(w, layers) - params))
    return best


def fit_plain_siren(vol01: np.ndarray, width: int, *, steps: int, lr: float, points: int | None, seed: int,
                    device, omega0: float = 30.0, bits: int = 8, layers: int = 3):
    """Fit a plain SIREN to the full-res volume (values in [0, 1]); L1 on random voxels per step.
    Returns (decoded volume in [0, 1] from the ``bits``-bit quantised weights, payload bytes, quant
    meta, params, train seconds, peak GPU bytes)."""
    import torch

    from inrv.codec.device import seed_everything
    from inrv.codec.quant import dequantize_state, quantize_state
    from inrv.codec.siren import Siren, index_coords

    seed_everything(seed)
    shape = vol01.shape
    net = Siren(width, layers, omega0).to(device)
    target = torch.from_numpy(vol01.reshape(-1).astype(np.float32)).to(device)
    total = target.numel()
    pts = total if not points or points >= total else points
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, total, (pts,), device=device, generator=gen) if pts < total else \
            torch.arange(total, device=device)
        loss = (net(index_coords(idx, shape))[:, 0] - target[idx]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    payload, meta = quantize_state({k: v.detach().cpu().numpy() for k, v in net.named_parameters()}, bits)
    state = dequantize_state(payload, meta)
    with torch.no_grad():
        for k, p in net.named_parameters():
            p.copy_(torch.from_numpy(state[k]))
        out = np.empty(total, np.float32)
        for s in range(0, total, 65536):
            idx = torch.arange(s, min(total, s + 65536), device=device)
            out[s:s + len(idx)] = net(index_coords(idx, shape))[:, 0].cpu().numpy()
    params = sum(p.numel() for p in net.parameters())
    return np.clip(out.reshape(shape), 0, 1), payload, meta, params, seconds, peak


def stream_bytes(enc, vol) -> tuple[int, str]:
    """Real stored size of an Encoded: the .inrv container when available, else zstd of the parts."""
    try:
        from inrv.formats.inrvfile import to_bytes

        return len(to_bytes(enc, vol)), "inrv-file"
    except Exception:  # container not ready or refuses: fall back and say so in the table
        import msgpack
        import zstandard

        raw = b"".join(enc.sections.values()) + msgpack.packb(enc.config, use_bin_type=True)
        return len(zstandard.ZstdCompressor(level=19).compress(raw)), "zstd(weights+config)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=None, help="NIfTI volume (default: mni_patch64)")
    ap.add_argument("--ds", default="2,4,8", help="downsampling factors, e.g. 2,4,8")
    ap.add_argument("--sn", default="30:230:20", help="SIREN widths, list or a:b:step (inclusive)")
    ap.add_argument("--nc", default="4,8,16", help="SRNO feature channels")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--points", type=int, default=None, help="query points per step (default: the preset's)")
    ap.add_argument("--lr-loss-weight", type=float, default=None)
    ap.add_argument("--prefit", type=int, default=None, help="SIREN-only low-res prefit steps (lr_prefit_steps)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-siren", action="store_true", help="skip the equal-parameter plain SIREN rows")
    ap.add_argument("--quick", action="store_true", help="CPU smoke scale: 60 steps, DS 2, SN 30, NC 4, 8192 points")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args(argv)

    import torch

    import inrv
    from inrv.codec.config import make_config
    from inrv.codec.device import resolve_device
    from inrv.codec.metrics import paper_cr, psnr, ssim3d
    from inrv.codec.paper import PaperModel

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.steps, a.ds, a.sn, a.nc = 60, "2", "30", "4"
        a.points = a.points or 8192
    path = a.input or next((p for p in DEFAULT_INPUTS if p.exists()), None)
    if path is None or not Path(path).exists():
        print(f"input volume not found: {path}", file=sys.stderr)
        return 2
    vol = inrv.load(path)
    x = vol.data.astype(np.float32)
    nvox = x.size
    src_bits = int(np.dtype(vol.data.dtype).itemsize * 8)
    lo, hi = float(x.min()), float(x.max())
    x01 = (x - lo) / (hi - lo if hi > lo else 1.0)
    dev = resolve_device(a.device)
    rows = []
    done_siren: set[int] = set()
    print(f"# {path.name} {x.shape} {vol.data.dtype}; steps={a.steps}; device={dev}"
          f"{' (QUICK: not converged)' if a.quick else ''}", flush=True)
    for ds in _ints(a.ds):
        for sn in _ints(a.sn):
            for nc in _ints(a.nc):
                cfg = make_config("paper", ds=ds, sn=sn, nc=nc, steps=a.steps, seed=a.seed,
                                  points_per_step=a.points, lr_loss_weight=a.lr_loss_weight,
                                  lr_prefit_steps=a.prefit)
                enc = PaperModel().fit(x, cfg, device=str(dev))
                y = PaperModel().render(enc, device=str(dev))
                nbytes, src = stream_bytes(enc, vol)
                p = enc.stats["params"]
                rows.append(dict(model="end-to-end", scale=f"1/{ds}", SN=sn, NC=nc, params=p,
                                 bpp_float32=32 * p / nvox, bpv_real=8 * nbytes / nvox, bytes=nbytes, bytes_from=src,
                                 CR_paper_pct=100 * paper_cr(p, nvox), ratio=src_bits * nvox / (8 * nbytes),
                                 PSNR=psnr(x, y), PSNR_float=enc.stats["psnr_float"], SSIM=ssim3d(x, y),
                                 train_s=enc.stats["train_seconds"], gpu_peak_MB=enc.stats["peak_gpu_bytes"] / 2**20,
                                 device=str(dev)))
                print(_fmt_row(rows[-1]), flush=True)
                if not a.no_siren and siren_width_for(p) not in done_siren:
                    w = siren_width_for(p)
                    done_siren.add(w)  # the same width is fitted once (params do not depend on DS)
                    y2, payload, meta, p2, secs, peak = fit_plain_siren(
                        x01, w, steps=a.steps, lr=cfg.lr, points=enc.stats["points_per_step"], seed=a.seed,
                        device=dev)
                    import msgpack
                    import zstandard

                    nb2 = len(zstandard.ZstdCompressor(level=19).compress(payload + msgpack.packb(meta)))
                    y2o = y2 * (hi - lo) + lo
                    rows.append(dict(model=f"SIREN W={w}", scale="1/1", SN=w, NC=0, params=p2,
                                     bpp_float32=32 * p2 / nvox, bpv_real=8 * nb2 / nvox, bytes=nb2,
                                     bytes_from="zstd(weights+meta)", CR_paper_pct=100 * paper_cr(p2, nvox),
                                     ratio=src_bits * nvox / (8 * nb2), PSNR=psnr(x, y2o), PSNR_float=float("nan"),
                                     SSIM=ssim3d(x, y2o), train_s=secs, gpu_peak_MB=peak / 2**20, device=str(dev)))
                    print(_fmt_row(rows[-1]), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    md = _markdown(rows, path, x.shape, a)
    (a.out / "paper_tables.md").write_text(md)
    with open(a.out / "paper_tables.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    print(md)
    return 0


_COLS = ["model", "scale", "SN", "NC", "params", "bpp_float32", "bpv_real", "CR_paper_pct", "ratio", "PSNR",
         "PSNR_float", "SSIM", "train_s", "gpu_peak_MB", "device", "bytes_from"]


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def _fmt_row(r: dict) -> str:
    return "| " + " | ".join(_cell(r[c]) for c in _COLS) + " |"


def _markdown(rows, path, shape, a) -> str:
    head = (f"Paper grid on `{path.name}` {tuple(shape)}, {a.steps} steps, seed {a.seed}"
            f"{', QUICK smoke scale (not converged)' if a.quick else ''}. PSNR/SSIM of the decoded 8-bit model.\n\n")
    lines = ["| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
    return head + "\n".join(lines + [_fmt_row(r) for r in rows]) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
