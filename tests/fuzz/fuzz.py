"""The long fuzz run: ``python tests/fuzz/fuzz.py --cases 100000 --seed 1 --out fuzz.jsonl``.

Runs the structure-aware cases of ``fuzzlib`` one after another in this process (torch loaded once)
and checks, per case: only ``InrvError`` subclasses escape (else a *crash*), the case takes at most
``--hang`` seconds (else a *hang*; a case still running after ``--kill`` seconds aborts the run with
a traceback, see ``faulthandler``), and the peak resident memory does not grow by more than
``--mem-mib`` MiB over the resident memory before the case (else a *memory* finding). Each finding
is written as one JSON line (golden file + operations, ready for ``regressions.json``); the last line
is the summary. Progress goes to stderr every ``--every`` cases. Start and stop anywhere with
``--start`` (cases are numbered; case i of seed s is always the same).
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzlib  # noqa: E402

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--hang", type=float, default=10.0, help="seconds: a slower case is a hang finding")
    ap.add_argument("--kill", type=float, default=120.0, help="seconds: abort the run (a real hang)")
    ap.add_argument("--mem-mib", type=float, default=256.0)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="JSON lines: findings, then the summary")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    golden = fuzzlib.load_golden()
    # warm up every decoder once (first-call allocations are not a case's growth)
    for name, (h, s) in golden.items():
        fuzzlib.run_case(fuzzlib.apply_ops(h, s, []))
    out = open(args.out, "w", encoding="utf-8") if args.out else None
    outcomes: collections.Counter[str] = collections.Counter()
    findings = {"crash": 0, "hang": 0, "memory": 0}
    worst_s, worst_mib = 0.0, 0.0
    t_start = time.perf_counter()

    def record(kind: str, i: int, name: str, ops, detail: str, seconds: float, mib: float) -> None:
        findings[kind] += 1
        line = {"finding": kind, "seed": args.seed, "case": i, "golden": name, "ops": ops, "detail": detail,
                "seconds": round(seconds, 3), "growth_mib": round(mib, 1)}
        print(json.dumps(line), file=sys.stderr, flush=True)
        if out:
            out.write(json.dumps(line) + "\n")
            out.flush()

    for i in range(args.start, args.start + args.cases):
        name, ops = fuzzlib.case_ops(args.seed, i, golden)
        h, s = golden[name]
        buf = fuzzlib.apply_ops(h, s, ops)
        before, peak0 = fuzzlib.rss_bytes(), fuzzlib.peak_bytes()
        faulthandler.dump_traceback_later(args.kill, exit=True)
        t0 = time.perf_counter()
        try:
            outcome = fuzzlib.run_case(buf)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - a crash, PanicException included
            outcome = "CRASH"
            record("crash", i, name, ops, f"{type(e).__name__}: {str(e)[:300]}", time.perf_counter() - t0, 0.0)
        finally:
            faulthandler.cancel_dump_traceback_later()
        dt = time.perf_counter() - t0
        peak1 = fuzzlib.peak_bytes()
        growth = (peak1 - before) / 2 ** 20 if peak1 > peak0 else 0.0
        worst_s, worst_mib = max(worst_s, dt), max(worst_mib, growth)
        outcomes[outcome] += 1
        if dt > args.hang:
            record("hang", i, name, ops, outcome, dt, growth)
        if growth > args.mem_mib:
            record("memory", i, name, ops, outcome, dt, growth)
        done = i - args.start + 1
        if done % args.every == 0 or done == args.cases:
            el = time.perf_counter() - t_start
            print(f"fuzz: {done}/{args.cases} cases in {el:.0f} s ({1000 * el / done:.1f} ms/case); "
                  f"crashes {findings['crash']}, hangs {findings['hang']}, memory {findings['memory']}; "
                  f"slowest {worst_s:.2f} s, largest growth {worst_mib:.1f} MiB", file=sys.stderr, flush=True)
    summary = {"summary": True, "seed": args.seed, "start": args.start, "cases": args.cases, **findings,
               "slowest_case_s": round(worst_s, 3), "largest_growth_mib": round(worst_mib, 1),
               "seconds": round(time.perf_counter() - t_start, 1), "outcomes": dict(outcomes.most_common()),
               "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(summary), flush=True)
    if out:
        out.write(json.dumps(summary) + "\n")
        out.close()
    return 1 if any(findings.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
