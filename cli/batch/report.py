"""Batch, chapter 8: the summary table printed on stderr at the end of a run."""

from __future__ import annotations

from .driver import BatchStats


def summary_table(stats: BatchStats) -> str:
    """The table printed on stderr at the end of a run."""
    oks = [r for r in stats.rows if r.get("status") == "ok"]

    def mean(key: str) -> str:
        vals = [r[key] for r in oks if isinstance(r.get(key), (int, float))]
        return f"{sum(vals) / len(vals):.3f}" if vals else "-"

    lines = [
        "inrv batch summary",
        f"  inputs            {stats.discovered}",
        f"  encoded ok        {stats.ok}",
        f"  failed            {stats.failed}",
        f"  skipped (done)    {stats.skipped_done}",
        f"  skipped (failed earlier; --retry-failed to retry)  {stats.skipped_failed}" if stats.skipped_failed
        else None,
        f"  not done (busy in another run, or the cluster failed; rerun)  {stats.locked}" if stats.locked
        else None,
        f"  mean bpv / PSNR dB / SSIM of this run  {mean('bpv')} / {mean('psnr')} / {mean('ssim')}" if oks else None,
        f"  wall time         {stats.seconds:.1f} s",
        "  interrupted: rerun the same command to continue" if stats.interrupted else None,
    ]
    out = [ln for ln in lines if ln is not None]
    if stats.failures:
        out.append("  failures:")
        for key, err in stats.failures[:20]:
            out.append(f"    {key}: {err}")
        if len(stats.failures) > 20:
            out.append(f"    ... and {len(stats.failures) - 20} more (see the manifest)")
    return "\n".join(out)
