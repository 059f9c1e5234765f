"""Pictures of ``inrv tune`` (needs matplotlib, the ``plot`` extra): the marginals of the paper's Figs 3-5
and a rate-quality (Pareto) plot of the whole grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .tradeoff import TradeOff, pareto_front  # noqa: E402

_LABELS = {"ds": "downsampling DS (scale 1/x)", "nc": "SRNO channels NC", "sn": "SIREN neurons SN",
           "levels": "latent levels", "channels": "latent channels", "width": "synthesis width"}
_COLORS = {"1/PSNR": "tab:blue", "1-SSIM": "tab:orange", "1-CR": "tab:green"}


def marginals_plot(t: TradeOff, path: Path, *, model: str = "paper") -> None:
    """One panel per axis: the Eq. 9 marginals (mean over the other axes, solid) of 1/PSNR, 1-SSIM and 1-CR
    and the slice through the trade-off point (dotted); the trade-off value is marked with red dashed lines
    at its intersections with each marginal."""
    axes = list(t.axes)
    fig, panels = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.4), squeeze=False)
    for k, (ax, panel) in enumerate(zip(axes, panels[0])):
        xs = list(range(len(t.axes[ax])))
        marg = t.marginals(ax)
        sl = t.slice_through_point(ax)
        for name, ys in marg.items():
            c = _COLORS.get(name, None)
            panel.plot(xs, ys, "o-", color=c, label=f"{name} (marginal)")
            panel.plot(xs, sl[name], ":", color=c, alpha=0.7, label=f"{name} (through the point)")
            y0 = ys[t.index[k]]
            panel.axhline(y0, color="red", ls="--", lw=0.8)
            panel.annotate(f"{y0:.4g}", (t.index[k], y0), textcoords="offset points", xytext=(4, 4), fontsize=7,
                           color="red")
        panel.axvline(t.index[k], color="red", ls="--", lw=0.8)
        panel.set_xticks(xs)
        panel.set_xticklabels([f"1/{v}" if ax == "ds" else str(v) for v in t.axes[ax]])
        panel.set_xlabel(_LABELS.get(ax, ax))
        panel.set_yscale("log")
        panel.set_title(f"{ax} = {t.point[ax]} at the trade-off point", fontsize=9)
        panel.grid(alpha=0.3)
    panels[0][0].set_ylabel("term value (log scale)")
    panels[0][-1].legend(fontsize=6, loc="best")
    fig.suptitle(f"{model} model: marginals of 1/PSNR, 1-SSIM, 1-CR (Eq. 9; paper Figs 3-5)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def pareto_plot(records: list[dict], curve: list[dict], report: dict[str, Any], path: Path) -> None:
    """Real bits per voxel (the stored .inrv bytes) against PSNR for every cell, its Pareto front, the
    trade-off point, and the latent model's curve when it was measured."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("psnr") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if ok:
        ax.scatter([r["bpv"] for r in ok], [r["psnr"] for r in ok], s=16, color="tab:gray",
                   label=f"{report['model']} grid cells ({len(ok)})")
        front = [ok[i] for i in pareto_front([r["bpv"] for r in ok], [r["psnr"] for r in ok])]
        ax.plot([r["bpv"] for r in front], [r["psnr"] for r in front], "-", color="tab:gray", lw=1,
                label="Pareto front of the grid")
    p = report["point"]
    if p.get("bpv") is not None:
        ax.scatter([p["bpv"]], [p["psnr"]], s=90, marker="*", color="red", zorder=5,
                   label="trade-off point " + ", ".join(f"{k} {v}" for k, v in report["choice"].items()
                                                        if k not in ("model", "target_bpv")))
    lc = sorted((r for r in curve if r.get("status") == "ok"), key=lambda r: r["bpv"])
    if lc:
        ax.plot([r["bpv"] for r in lc], [r["psnr"] for r in lc], "s-", color="tab:blue",
                label="latent model (lambda sweep)")
    ax.set_xscale("log")
    ax.set_xlabel("bits per voxel (real .inrv file size)")
    ax.set_ylabel("PSNR (dB, peak = data range)")
    title = f"{Path(report['input']).name}: rate vs quality; {report['model']} cells {report['settings']['steps']} steps"
    if lc:
        title += f", latent {report.get('latent_curve_steps') or 'preset'} steps"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
