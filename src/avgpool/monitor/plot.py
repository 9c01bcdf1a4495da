"""Why the gate failed, as a picture: baseline and candidate histograms of the most drifted
layers, overlaid on the baseline's bins, with the statistics that decided each verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from avgpool._files import write_atomically
from avgpool.monitor.drift import DriftReport, LayerDrift
from avgpool.monitor.profile import ProfileError

__all__ = ["plot_drift"]

_COLOURS = {"ok": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}


def _panel(ax: Any, d: LayerDrift) -> None:
    from avgpool._tables import printable

    edges = d.edges
    hb, hc = (np.asarray(h, dtype=np.float64) for h in d.hist)
    width = np.diff(edges)
    db = hb[1:-1] / max(hb.sum(), 1) / width
    dc = hc[1:-1] / max(hc.sum(), 1) / width
    ax.stairs(db, edges, fill=True, alpha=0.35, color="#1565c0", label="baseline")
    ax.stairs(dc, edges, linewidth=1.6, color="#c62828", label="candidate")
    # a spike (ReLU zeros, a dead channel) would flatten everything else: clip the axis above
    # the bulk of the bins and say so
    both = np.concatenate([db, dc])
    positive = both[both > 0]
    top = float(positive.max()) if positive.size else 1.0
    bulk = float(np.quantile(positive, 0.95)) * 1.6 if positive.size > 10 else top
    if top > 2.5 * bulk:
        ax.set_ylim(0, bulk)
        i = int(np.argmax(np.maximum(db, dc)))
        mass_b = hb[1 + i] / max(hb.sum(), 1)
        mass_c = hc[1 + i] / max(hc.sum(), 1)
        ax.annotate(
            f"clipped: bin [{edges[i]:.3g}, {edges[i + 1]:.3g}) holds\nbase {mass_b:.1%}, cand {mass_c:.1%}",
            xy=((edges[i] + edges[i + 1]) / 2, bulk),
            xytext=(0.5, 0.62),
            textcoords="axes fraction",
            fontsize=7,
            arrowprops={"arrowstyle": "->", "color": "#555555"},
        )
    m = d.metrics
    name = d.name if d.name == d.candidate_name else f"{d.name} -> {d.candidate_name}"
    # a layer name comes from a model file: escaped as in the tables, and plain text
    # (matplotlib reads '$...$' as mathematics, and bad mathematics fails the whole plot)
    ax.set_title(
        f"{printable(name)}  [{d.verdict.upper()}]",
        color=_COLOURS[d.verdict],
        fontsize=10,
        loc="left",
        parse_math=False,
    )
    lines = [
        f"mean shift {m['mean_shift']:+.2f} sd   std ratio {m['std_ratio']:.2f}",
        f"PSI {m['psi']:.3f}   KS {m['ks']:.3f}",
        f"W1 {m['wasserstein']:.3f} sd   JS {m['js']:.3f}",
    ]
    outside = []
    for label, i in (("below", 0), ("above", -1)):
        fb, fc = hb[i] / max(hb.sum(), 1), hc[i] / max(hc.sum(), 1)
        if fb >= 5e-4 or fc >= 5e-4:
            outside.append(f"{label} the bins: base {fb:.1%}, cand {fc:.1%}")
    ax.text(
        0.98,
        0.97,
        "\n".join(lines + outside),
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7.5,
        family="monospace",
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "#bbbbbb"},
    )
    if d.reasons:
        ax.set_xlabel(f"activation value  (flagged by: {', '.join(d.reasons)})", fontsize=8)
    else:
        ax.set_xlabel("activation value", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left")


def plot_drift(report: DriftReport, path: Any, *, top: int = 4, dpi: int = 110) -> list[str]:
    """Draw the ``top`` most drifted layers of ``report`` into a PNG at ``path``.

    Returns the names of the layers drawn. The file is written atomically (`write_atomically`).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        raise ProfileError("--plot needs matplotlib: pip install 'avgpool[monitor]'") from None
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ProfileError(f"top must be an int >= 1 (layers in the plot), got {top!r}")
    layers = report.most_drifted(top)
    if not layers:
        raise ProfileError("no layers in common between the profiles: nothing to plot")
    cols = 1 if len(layers) == 1 else 2
    rows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.6 * rows), squeeze=False)
    for ax, d in zip(axes.ravel(), layers):
        _panel(ax, d)
    for ax in axes.ravel()[len(layers) :]:
        ax.axis("off")
    counts = {v: sum(d.verdict == v for d in report.layers) for v in ("fail", "warn", "ok")}
    fig.suptitle(
        f"activation drift: {report.verdict.upper()}  ({counts['fail']} fail, {counts['warn']} warn, "
        f"{counts['ok']} ok; most drifted first)",
        color=_COLOURS[report.verdict],
        fontsize=11,
    )
    fig.tight_layout()
    try:
        write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return [d.name for d in layers]
