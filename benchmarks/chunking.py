"""The rate cost of chunking: one volume encoded whole vs in chunks by the numcodecs codec (zarr's view).

    python benchmarks/chunking.py                                   # samples/mni_patch64.nii.gz, chunks 64 and 32
    python benchmarks/chunking.py --chunks 64,32,16 --preset fast --runs 1
    python benchmarks/chunking.py --volume mni_t1 --chunks 197,128,64   # the MNI152 T1 template from nilearn

Every chunk is encoded by :class:`inrv.numcodecs.Inrv` exactly as zarr stores it (one ``.inrv`` file per chunk,
edge chunks padded with the fill value 0 as zarr does); the rate is 8 x (sum of the chunks' bytes) / (voxels of
the volume), the quality is measured on the whole reassembled volume in its stored dtype (PSNR with the
original data range, 3D SSIM, max error). The same codec config encodes every chunk size, so the only
difference between rows is the chunking. ``--volume mni_t1`` loads the 197x233x189 MNI152 T1 template that
ships inside the ``nilearn`` wheel (``pip install nilearn``; no download).

Prints a Markdown table and the machine, date, command and number of runs.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_volume(name: str) -> tuple[str, np.ndarray]:
    import inrv

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import volumes  # mni_t1 / mni_patch64 by name (benchmarks/volumes.py)

    path = Path(volumes.resolve(name))
    if not path.is_absolute() and not path.exists():
        path = ROOT / name
    return volumes.display_name(name), inrv.load(path).data


def encode_chunked(vol: np.ndarray, edge: int, codec) -> tuple[int, np.ndarray, int, float]:
    """(bytes, reassembled volume, chunks, seconds) with chunks of ``edge`` voxels per axis."""
    out = np.zeros_like(vol)
    total = 0
    count = 0
    t0 = time.perf_counter()
    starts = [range(0, n, edge) for n in vol.shape]
    for i, j, k in itertools.product(*starts):
        block = vol[i:i + edge, j:j + edge, k:k + edge]
        chunk = np.zeros((edge, edge, edge), vol.dtype)        # zarr pads edge chunks with the fill value
        chunk[: block.shape[0], : block.shape[1], : block.shape[2]] = block
        buf = codec.encode(chunk)
        total += len(buf)
        count += 1
        dec = codec.decode(buf)
        out[i:i + edge, j:j + edge, k:k + edge] = dec[: block.shape[0], : block.shape[1], : block.shape[2]]
    return total, out, count, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volume", default="samples/mni_patch64.nii.gz",
                    help="a volume file (relative to the repository) or mni_t1 (the nilearn MNI152 template)")
    ap.add_argument("--chunks", default="64,32", help="chunk edges in voxels, comma-separated")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--steps", type=int, default=None, help="training steps per chunk (default: the preset's)")
    ap.add_argument("--runs", type=int, default=1, help="runs per chunk size (median seconds)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from inrv.codec.metrics import max_abs_error, psnr, ssim3d
    from inrv.numcodecs import Inrv

    label, vol = load_volume(args.volume)
    codec = Inrv(preset=args.preset, steps=args.steps, device=args.device)
    edges = [int(e) for e in args.chunks.split(",")]
    rows = []
    for edge in edges:
        secs = []
        for _ in range(args.runs):
            nbytes, rec, count, s = encode_chunked(vol, edge, codec)
            secs.append(s)
        rows.append((edge, count, nbytes, 8.0 * nbytes / vol.size, psnr(vol, rec), ssim3d(vol, rec),
                     max_abs_error(vol, rec), statistics.median(secs)))
        print(f"# done: chunk edge {edge}: {nbytes} bytes, PSNR {rows[-1][4]:.2f} dB", file=sys.stderr, flush=True)
    base = next((r for r in rows if r[1] == 1), rows[0])

    print(f"# chunking cost: {label} {vol.shape} {vol.dtype}, codec {codec!r}")
    print(f"# command: python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; date "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; runs per row: {args.runs}")
    print("| chunk edge | chunks | bytes | bits/voxel | rate vs whole | PSNR dB | SSIM | max error | "
          "encode+decode s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for edge, count, nbytes, bpv, p, ss, me, s in rows:
        print(f"| {edge} | {count} | {nbytes} | {bpv:.4f} | {100 * (bpv / base[3] - 1):+.1f} % | {p:.2f} | "
              f"{ss:.4f} | {me:g} | {s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
