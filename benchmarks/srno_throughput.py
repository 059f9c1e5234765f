"""SRNO query throughput of the paper model on the CPU (issue 4), without an encode.

    OMP_NUM_THREADS=2 python benchmarks/srno_throughput.py                 # mni_t1 shape, 2 threads
    python benchmarks/srno_throughput.py --shape 256 256 256 --threads 1 --chunks 4 --repeat 3

What it measures: the ``paper`` preset's SRNO (nc=4, 2 res blocks, width 16, 2 heads, 2 Galerkin
blocks, head width 32, ds=2) with random weights (seeded) on a random low-res volume of
``lowres_shape(shape, ds)``. The encoder runs once on the whole low-res grid (timed separately);
then ``--chunks`` consecutive chunks of ``RENDER_CHUNK`` full-res voxels from the middle of the
volume are decoded through the same call the decoder uses (``paper._query_range``: the chunks spread
over ``torch.get_num_threads()`` worker threads, as in ``_predict``), ``--repeat`` times; the best
repeat is reported. ``--reference`` times the plain formulation instead (``srno.FAST_CPU = False``,
chunks decoded one after the other with torch's own threads, as before the fast path).

Scale: by default 8 chunks x 65,536 = 524,288 voxels (6 % of the 197x233x189 MNI T1 grid, 8.7 M
voxels); the projected whole-volume decode is ``encoder seconds + voxels / throughput`` (it leaves
out the SIREN evaluation of the low-res grid and the file reading, both small next to the SRNO).
Weights are random, so only the speed is meaningful: the cost does not depend on the weight values.
Output: one JSON line: voxels/s, torch threads and worker threads, ``cores_busy`` (CPU seconds of
the process per wall second during the best repeat: how many cores the decode really got; on a
shared machine less than the threads asked for), projected seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import time

import numpy as np
import torch

from inrv.codec import paper
from inrv.codec import srno as srno_mod
from inrv.codec.config import PRESETS
from inrv.codec.downsample import lowres_shape
from inrv.codec.srno import SRNO3D

MNI_SHAPE = (197, 233, 189)


class _Net(torch.nn.Module):
    """The part of the paper network that ``_query_window`` reads (``.srno``)."""

    def __init__(self, srno):
        super().__init__()
        self.srno = srno


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=MNI_SHAPE, help="full-res output shape")
    ap.add_argument("--chunks", type=int, default=8, help="chunks of RENDER_CHUNK voxels to time")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS)")
    ap.add_argument("--reference", action="store_true", help="time the reference path (no fast path, no workers)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    srno_mod.FAST_CPU = not args.reference
    workers = 1 if args.reference else torch.get_num_threads()
    cfg = PRESETS["paper"]
    shape = tuple(args.shape)
    lr_shape = lowres_shape(shape, cfg.ds)
    torch.manual_seed(0)
    srno = SRNO3D(cfg.nc, cfg.res_blocks, cfg.attn_width, cfg.attn_heads, cfg.attn_blocks, cfg.mlp_width).eval()
    net = _Net(srno)
    lr = torch.rand(lr_shape)
    total = math.prod(shape)
    chunk = paper.RENDER_CHUNK
    n = min(total, args.chunks * chunk)
    start = max(0, (total - n) // 2)
    out = np.empty(total, dtype=np.float32)
    with torch.no_grad():
        t0 = time.perf_counter()
        feat = srno.encoder(lr)
        enc_s = time.perf_counter() - t0
        zf = lr.reshape(-1)
        best, busy = math.inf, 0.0
        for _ in range(args.repeat):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            paper._query_range(net, feat, zf, 0, lr_shape[0], lr_shape, shape, start, start + n, out,
                               torch.device("cpu"), chunk, contextlib.nullcontext(), workers)
            wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            if wall < best:
                best = wall
                busy = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / wall
    vps = n / best
    res = {"path": "reference" if args.reference else "fast", "shape": list(shape), "lr_shape": list(lr_shape),
           "threads": torch.get_num_threads(), "workers": workers, "voxels_timed": n, "query_s": round(best, 3),
           "voxels_per_s": round(vps), "voxels_per_s_per_thread": round(vps / torch.get_num_threads()),
           "cores_busy": round(busy, 2), "encoder_s": round(enc_s, 3),
           "projected_decode_s": round(enc_s + total / vps, 1)}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
