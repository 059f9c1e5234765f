"""Whole-volume speed and memory (issue 4): encode / decode seconds, peak memory, quality, real bits
per voxel, and for the paper model's blocks, block-face vs interior PSNR (seams).

    python benchmarks/speed.py                               # GPU if present: full scale (preset steps)
    python benchmarks/speed.py --device cpu                  # CPU: reduced scale, see below
    python benchmarks/speed.py --preset paper                # the paper model (blocks, seams)
    python benchmarks/speed.py --input scan.nii.gz --preset paper --steps 2000
    python benchmarks/speed.py --synthetic 512               # 512^3 synthetic: peak memory

The preset defaults to inrv's default (``balanced``, the latent model). Input: ``--input`` (default
``mni_t1``, the MNI152 T1 template inside the nilearn wheel, when nilearn is installed, else
samples/mni_patch64.nii.gz; see benchmarks/volumes.py). Encode goes through
``inrv.compress`` (load, fit, write the real ``.inrv``; its seconds include the fit's own
verification decode and compress's quality decode); decode is timed on the chosen device and again
on the CPU with ``--cpu-threads`` threads (default 2), from the ``.inrv`` bytes.

CPU reduced scale (the default when the device is the CPU and ``--steps`` is not given): the latent
presets train ``CPU_STEPS_LATENT`` (5) steps without polish steps, the paper presets ``--steps 20
--prefit 20``; the quality figures are then far from converged and say so; the seconds per step,
decode seconds and peak memory are the figures to read.

Block faces (paper model): voxels within one voxel of a block boundary (the full-res block edge is
the partition's low-res block size times the downsampling factor). ``seam_gap_db`` = interior PSNR -
face PSNR. The latent model has no blocks (no faces: null).

``--tensor-peak``: also reports ``peak_tensor_gb_encode``, the peak of live torch tensors during the
encode (a dispatch mode that counts every storage from creation to release). Run on a CPU it estimates the GPU's
``max_memory_allocated`` for the same encode (the same tensors, less the CUDA libraries' workspaces):
an estimate, not the GPU measurement. With ``--tensor-peak`` a CPU run of the latent model trains with
``rate_checkpoint`` on, as a CUDA run does by default.

``--synthetic N``: encodes an N^3 smooth synthetic volume (float32) with the preset and few steps
(``inrv.encode``, no file), reporting seconds and peak memory (GPU: max_memory_allocated; CPU: peak
RSS from ``resource.getrusage``).

Targets printed beside the figures (issue 4, one H100): mni_t1 encode <= 30 s, decode <= 1 s on the
GPU and <= 30 s on 2 CPU cores, peak GPU memory <= 4 GB; a 512^3 synthetic encodes without OOM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import volumes as volumes_by_name  # noqa: E402
DEFAULT_INPUTS = ["mni_t1", "mni_patch64"]   # names of benchmarks/volumes.py (mni_t1 needs nilearn)
CPU_STEPS_LATENT = 5     # reduced CPU scale of the latent presets (a step of mni_t1 takes ~10 s on a CPU)
TARGETS = {"encode_s": 30.0, "decode_gpu_s": 1.0, "decode_cpu2_s": 30.0, "peak_gpu_gb": 4.0}


def _has_nilearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("nilearn") is not None


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: kB


@contextlib.contextmanager
def tensor_peak(enabled: bool):
    """Peak bytes of live torch tensor storages created inside the block, counted by a dispatch mode
    (each new storage is added when an op returns it and removed when it is freed). On a CPU run this
    is what the same run would hold in ``torch.cuda.max_memory_allocated`` on a GPU, less the CUDA
    libraries' own workspaces and the allocator's rounding: an estimate of the GPU figure, not a
    measurement of it."""
    box = {"gb": None}
    if not enabled:
        yield box
        return
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.weak import WeakIdKeyDictionary

    class Peak(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.cur = self.peak = 0
            self.seen = WeakIdKeyDictionary()

        def _free(self, n):
            self.cur -= n

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and not t.is_meta:
                    st = t.untyped_storage()
                    if st not in self.seen:
                        n = st.nbytes()
                        self.seen[st] = n
                        self.cur += n
                        self.peak = max(self.peak, self.cur)
                        weakref.finalize(st, self._free, n)
            return out

    mode = Peak()
    with mode:
        yield box
    box["gb"] = mode.peak / 2**30


def face_mask(shape, edges) -> np.ndarray:
    """True on voxels adjacent to a block boundary (both sides) along any axis."""
    m = np.zeros(shape, bool)
    for ax, h in enumerate(edges):
        if h <= 0 or h >= shape[ax]:
            continue
        idx = np.zeros(shape[ax], bool)
        for k in range(h, shape[ax], h):
            idx[k - 1:k + 1] = True
        sl = [None, None, None]
        sl[ax] = slice(None)
        m |= idx[tuple(sl)]
    return m


def seam_psnr(ref: np.ndarray, test: np.ndarray, edges) -> dict:
    rng = float(ref.max() - ref.min()) or 1.0
    face = face_mask(ref.shape, edges)

    def p(mask):
        if not mask.any():
            return None
        e = float(np.mean((ref[mask].astype(np.float64) - test[mask]) ** 2))
        return float("inf") if e == 0 else 10 * np.log10(rng * rng / e)

    f, i = p(face), p(~face)
    return {"face_psnr": f, "interior_psnr": i, "seam_gap_db": None if f is None or i is None else i - f,
            "face_fraction": float(face.mean())}


def is_latent(preset: str) -> bool:
    from inrv.codec.config import LatentConfig, make_config

    return isinstance(make_config(preset), LatentConfig)


def overrides(args, device: str, reduced: bool) -> dict:
    """Config overrides for the run: the latent model takes steps (and, reduced, no polish steps);
    the paper model steps, pre-fit steps and the block edge."""
    if is_latent(args.preset):
        over = {}
        if args.steps is not None or reduced:
            over["steps"] = args.steps if args.steps is not None else CPU_STEPS_LATENT
        if reduced:
            over["polish_steps"] = 0
        if args.tensor_peak and device == "cpu":
            over["rate_checkpoint"] = True      # what a CUDA run does by default: estimate that run
        return over
    over = {"block": args.block}
    if args.steps is not None or reduced:
        over["steps"] = args.steps if args.steps is not None else 20
        over["lr_prefit_steps"] = args.prefit if args.prefit is not None else (20 if reduced else None)
    elif args.prefit is not None:
        over["lr_prefit_steps"] = args.prefit
    return over


def run_volume(args, device: str) -> dict:
    import torch

    import inrv
    from inrv.codec.metrics import quality
    from inrv.formats.inrvfile import read_inrv

    src = Path(volumes_by_name.resolve(args.input or ("mni_t1" if _has_nilearn() else "mni_patch64")))
    reduced = device == "cpu" and args.steps is None
    over = overrides(args, device, reduced)
    vol = inrv.load(src)
    with tempfile.TemporaryDirectory() as td:
        dst = Path(td) / "v.inrv"
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with tensor_peak(args.tensor_peak) as tp:
            summary = inrv.compress(src, dst, args.preset, device=device, **over)
        enc_s = time.perf_counter() - t0
        peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
        nbytes = dst.stat().st_size
        f = read_inrv(dst)
        enc = f.encoded
        t0 = time.perf_counter()
        y = inrv.decode(enc, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dec_s = time.perf_counter() - t0
        threads = torch.get_num_threads()
        torch.set_num_threads(args.cpu_threads)
        t0 = time.perf_counter()
        y_cpu = inrv.decode(enc, device="cpu") if device != "cpu" or args.cpu_threads != threads else y
        dec_cpu_s = time.perf_counter() - t0 if y_cpu is not y else dec_s
        torch.set_num_threads(threads)
    x = vol.data.astype(np.float32)
    q = quality(x, y)
    pc = enc.config.get("partition")
    # the latent model has no blocks: no faces to compare (edges 0 = none)
    edges = [b * f for b, f in zip(pc["bl"], enc.config["ds"])] if pc else [0, 0, 0]
    st = enc.stats
    return {
        "input": str(src), "shape": list(x.shape), "device": device, "preset": args.preset,
        "model": enc.model, "overrides": over,
        "reduced_scale": reduced, "steps": st.get("steps"), "train_seconds": st.get("train_seconds"),
        "seconds_per_step": (st["train_seconds"] / max(1, st.get("steps") or 1)) if st.get("train_seconds") else None,
        "encode_s": enc_s, "decode_s": dec_s, "decode_cpu_s": dec_cpu_s, "cpu_threads": args.cpu_threads,
        "peak_gpu_gb": peak_gpu, "peak_tensor_gb_encode": tp["gb"], "peak_rss_mb": _rss_mb(), "psnr": q.get("psnr"), "ssim": q.get("ssim"),
        "bpv": 8.0 * nbytes / x.size, "file_bytes": nbytes, "params": st.get("params"),
        "blocks": st.get("blocks"), "active_blocks": st.get("active_blocks"), "block_edge_voxels": edges,
        **seam_psnr(x, y, edges), "targets": TARGETS, "summary_psnr": summary.psnr,
    }


def synthetic(n: int) -> np.ndarray:
    g = np.linspace(0, 1, n, dtype=np.float32)
    x = np.empty((n, n, n), np.float32)
    for i in range(n):   # built slab by slab: no n^3 float64 temporaries
        x[i] = np.cos(7 * g[i]) * np.sin(5 * g)[:, None] + np.cos(3 * g)[None, :] * (g[i] > 0.2)
    return x


def run_synthetic(args, device: str) -> dict:
    import torch

    import inrv

    x = synthetic(args.synthetic)
    base = _rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    latent = is_latent(args.preset)
    steps = args.steps if args.steps is not None else (
        (CPU_STEPS_LATENT if latent else 5) if device == "cpu" else (None if latent else 100))
    over = {"steps": steps} if latent else {"steps": steps, "lr_prefit_steps": min(steps, 10), "block": args.block}
    if latent and device == "cpu" and args.steps is None:
        over["polish_steps"] = 0
    if latent and args.tensor_peak and device == "cpu":
        over["rate_checkpoint"] = True
    t0 = time.perf_counter()
    with tensor_peak(args.tensor_peak) as tp:
        enc = inrv.encode(x, args.preset, device=device, **over)
    s = time.perf_counter() - t0
    st = enc.stats
    return {"synthetic": args.synthetic, "device": device, "preset": args.preset, "model": enc.model,
            "steps": st.get("steps"), "encode_s": s, "train_seconds": st.get("train_seconds"),
            "blocks": st.get("blocks"), "volume_mb": x.nbytes / 2**20, "peak_rss_mb": _rss_mb(),
            "rss_before_mb": base,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
            "peak_tensor_gb_encode": tp["gb"], "psnr": st.get("psnr_quantised", st.get("psnr")), "bpv": st.get("bpv_total")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input")
    ap.add_argument("--preset", default=None,
                    help="preset (default: inrv's default, the latent model's 'balanced')")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--prefit", type=int)
    ap.add_argument("--block", type=int, default=None, help="block edge in voxels (default: the preset's)")
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--synthetic", type=int, help="encode an N^3 synthetic volume (peak memory)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--tensor-peak", action="store_true",
                    help="also report the encode's peak live tensor memory (on a CPU, an "
                         "estimate of the GPU's peak; slows the encode)")
    args = ap.parse_args(argv)
    import torch

    from inrv.codec.device import resolve_device

    if args.preset is None:
        from inrv.codec.config import DEFAULT_PRESET

        args.preset = DEFAULT_PRESET
    device = str(resolve_device(args.device))
    if device == "cpu":
        torch.set_num_threads(args.cpu_threads)
    res = run_synthetic(args, device) if args.synthetic else run_volume(args, device)
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
