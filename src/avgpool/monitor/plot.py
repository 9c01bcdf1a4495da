"""Why the gate failed, as a picture: baseline and candidate histograms of the most drifted
layers, overlaid on the same buckets, with the statistics that decided each verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from avgpool._files import write_atomically
from avgpool.monitor.drift import DriftReport, LayerDrift
from avgpool.monitor.exphist import estimates
from avgpool.monitor.profile import ProfileError

__all__ = ["plot_drift"]

#: Equal-width bins the plot re-bins the histograms into.
_DISPLAY_BINS = 60
_COLOURS = {"ok": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}


def _panel(ax: Any, d: LayerDrift) -> None:
    from avgpool._tables import printable

    lower, upper = d.bounds
    hb, hc = (np.asarray(h, dtype=np.float64) for h in d.hist)
    pb, pc = hb / max(hb.sum(), 1), hc / max(hc.sum(), 1)
    # the exponential buckets are re-binned for the eye: each bucket's mass spread evenly over
    # its extent, into equal bins over the central 99.8% of both distributions; exact zeros (a
    # spike of no width) and the tails beyond that range are reported in the text box instead
    zero = upper == lower
    x = estimates(lower, upper)
    cum = np.cumsum((pb + pc) / 2)
    total = cum[-1] if cum.size else 0.0
    if total > 0:
        lo = float(x[min(int(np.searchsorted(cum, 0.001 * total)), len(x) - 1)])
        hi = float(x[min(int(np.searchsorted(cum, 0.999 * total)), len(x) - 1)])
    else:
        lo = hi = 0.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _DISPLAY_BINS + 1)
    width = edges[1] - edges[0]
    span = np.where(zero, 1.0, upper - lower)
    share = np.where(zero, 0.0, np.clip((edges[:, None] - lower) / span, 0.0, 1.0))  # (edges, buckets)
    db, dc = (np.diff(share @ p) / width for p in (pb, pc))
    ax.stairs(db, edges, fill=True, alpha=0.35, color="#1565c0", label="baseline")
    ax.stairs(dc, edges, linewidth=1.6, color="#c62828", label="candidate")
    # a spike (a dead channel, values piled at one point) would flatten everything else: clip
    # the axis above the bulk of the bins and say so
    both = np.concatenate([db, dc])
    positive = both[both > 0]
    top = float(positive.max()) if positive.size else 1.0
    bulk = float(np.quantile(positive, 0.95)) * 1.6 if positive.size > 10 else top
    if top > 2.5 * bulk:
        ax.set_ylim(0, bulk)
        i = int(np.argmax(np.maximum(db, dc)))
        ax.annotate(
            f"clipped: bin [{edges[i]:.3g}, {edges[i + 1]:.3g}) holds\n"
            f"base {db[i] * width:.1%}, cand {dc[i] * width:.1%}",
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
    for label, where in (
        ("exact zeros", zero),
        ("below the plot", ~zero & (x < lo)),
        ("above the plot", ~zero & (x > hi)),
    ):
        fb, fc = pb[where].sum(), pc[where].sum()
        if fb >= 5e-4 or fc >= 5e-4:
            outside.append(f"{label}: base {fb:.1%}, cand {fc:.1%}")
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
