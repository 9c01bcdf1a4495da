"""The study's plots, drawn from the results dictionary: accuracy against latency, activation
histograms per variant on shared axes, and training curves. One colour per variant throughout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError

__all__ = ["accuracy_vs_latency", "activations", "training_curves"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        raise AvgPoolError("the study's plots need matplotlib: pip install 'avgpool[study]'") from None
    return plt


def _colours(r: dict[str, Any]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {v["name"]: cmap(i % 10) for i, v in enumerate(r["variants"])}


def _save(fig: Any, path: Any, dpi: int = 110) -> Path:
    """Write to a temporary name beside ``path``, then rename (no half-written PNG)."""
    plt = _pyplot()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def accuracy_vs_latency(r: dict[str, Any], path: Any) -> Path:
    """Two panels (batch 1, the larger batch): mean accuracy with a ±1 std bar over seeds and each
    seed as a dot, against P50 latency with a whisker out to P95; one labelled point per variant,
    and a hollow point at the P50 of its torch.nn twin where it has one."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    colours = _colours(r)
    n_seeds = len(r["seeds"])
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6), sharey=True)
    kinds = (("batch1", "batch 1"), ("batch", f"batch {r['variants'][0]['latency']['batch']['batch']}"))
    for ax, (kind, label) in zip(axes, kinds):
        for v in r["variants"]:
            t, a = v["latency"][kind], v["accuracy"]
            colour = colours[v["name"]]
            std = a["std"] or 0.0
            ax.errorbar(
                t["p50_ms"],
                a["mean"],
                yerr=std,
                xerr=[[0.0], [t["p95_ms"] - t["p50_ms"]]],
                fmt="o",
                ms=7,
                color=colour,
                ecolor=colour,
                elinewidth=1.4,
                capsize=4,
            )
            twin = (v.get("latency_torch_nn") or {}).get(kind)
            if twin is not None:
                ax.plot([twin["p50_ms"], t["p50_ms"]], [a["mean"]] * 2, ls=":", lw=1.0, color=colour)
                ax.plot(twin["p50_ms"], a["mean"], "o", ms=7, mfc="white", mec=colour, mew=1.4)
            seeds = list(a["per_seed"].values())
            ax.scatter([t["p50_ms"]] * len(seeds), seeds, s=12, color=colour, alpha=0.45, zorder=1)
            ax.annotate(
                v["name"],
                (t["p50_ms"], a["mean"]),
                xytext=(7, 6),
                textcoords="offset points",
                fontsize=9,
                color=colour,
                fontweight="bold",
            )
        ax.set_xlabel(f"latency at {label}, ms", fontsize=9)
        ax.set_title(f"accuracy vs latency, {label}", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi + 0.12 * (hi - lo))  # room for the labels of the slowest points
    axes[0].set_ylabel(
        f"test accuracy (mean ± std over {n_seeds} seed{'s' * (n_seeds > 1)}; small dots: seeds)", fontsize=9
    )
    s = r["setting"]
    fig.suptitle(
        f"{r['data']['name']}: {s['epochs']} epochs, {r['threads']} thread(s), {s['name']} setting",
        fontsize=11,
    )
    grey = "#555555"
    keys = [
        Line2D([], [], color=grey, marker="o", ms=7, lw=1.4, label="P50, whisker to P95; bar: ±1 std"),
        Line2D([], [], color=grey, marker="o", ms=4, lw=0, alpha=0.45, label="one seed"),
    ]
    if any(v.get("latency_torch_nn") for v in r["variants"]):
        keys.append(
            Line2D(
                [],
                [],
                color=grey,
                ls=":",
                marker="o",
                ms=7,
                mfc="white",
                mec=grey,
                label="P50 of the same model with torch.nn pooling",
            )
        )
    fig.legend(handles=keys, loc="lower center", ncol=len(keys), fontsize=8.5, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)


def activations(r: dict[str, Any], path: Any) -> Path:
    """One histogram per variant (rows) and downsampling layer (columns), on the shared edges.

    The bars are the non-zero values' share of all values per bin; the exact zeros (which a
    rectified network has many of) are one grey bar just left of 0, and given in numbers.
    Axes are shared down each column.
    """
    plt = _pyplot()
    colours = _colours(r)
    vs = [v for v in r["variants"] if v["activations"]]
    if not vs:
        raise AvgPoolError("no activation statistics to plot")
    cols = max(len(v["activations"]) for v in vs)
    fig, axes = plt.subplots(
        len(vs), cols, figsize=(5.2 * cols, 1.75 * len(vs) + 0.9), sharex="col", sharey="col", squeeze=False
    )
    for i, v in enumerate(vs):
        for k in range(cols):
            ax = axes[i, k]
            if k >= len(v["activations"]):
                ax.axis("off")
                continue
            a = v["activations"][k]
            edges = np.asarray(a["edges"])
            hist = np.asarray(a["hist"], dtype=np.float64)
            total = max(a["count"], 1)
            zero_bin = int(np.searchsorted(edges, 0.0, side="right")) - 1
            if 0 <= zero_bin < len(hist):
                hist[zero_bin] -= a["zeros"]
            ax.stairs(hist / total, edges, fill=True, color=colours[v["name"]], alpha=0.8)
            width = edges[1] - edges[0]
            # the zeros get a bar of their own just left of 0, so the first bin stays visible
            ax.bar(-width, a["zeros"] / total, width=width, align="edge", color="#9e9e9e")
            ax.set_yscale("log")
            ax.text(
                0.98,
                0.92,
                f"mean {a['mean']:.3f}  std {a['std']:.3f}\nmax {a['max']:.2f}  zeros {a['sparsity']:.1%}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7.5,
                family="monospace",
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "#bbbbbb"},
            )
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
            if k == 0:
                ax.set_ylabel(v["name"], fontsize=10, color=colours[v["name"]], fontweight="bold")
            if i == 0:
                shape = "x".join(map(str, a["shape"]))
                ax.set_title(f"after downsampling {k + 1} ({a['probe']}, {shape} per image)", fontsize=9)
            if i == len(vs) - 1:
                ax.set_xlabel("activation value", fontsize=8)
    fig.suptitle(
        "activations on the test set, all seeds' models: share of values per bin (log scale); "
        "grey bar left of 0: exact zeros",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def training_curves(r: dict[str, Any], path: Any) -> Path:
    """Mean training loss and test accuracy per epoch, the band spanning the seeds' min to max."""
    plt = _pyplot()
    colours = _colours(r)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for v in r["variants"]:
        for ax, key in zip(axes, ("train_loss", "test_accuracy")):
            curves = np.asarray(list(v["curves"][key].values()), dtype=np.float64)
            epochs = np.arange(1, curves.shape[1] + 1)
            colour = colours[v["name"]]
            ax.plot(epochs, curves.mean(axis=0), color=colour, label=v["name"], lw=1.6)
            if len(curves) > 1:
                ax.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.15)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (cross-entropy, log scale)", fontsize=9)
    axes[1].set_ylabel("test accuracy", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle("training: mean over seeds, band from the lowest to the highest seed", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
