"""Curves as a person reads them: losses on a log axis, every metric family in its own panel with its
own unit, a distinct colour per curve, the legend beside the axes (never over the curves).

Figures are built by ``*_figure`` functions (tests read their lines, colours and scales) and written
by ``plot_*`` functions (PNG).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

Series = dict[str, Sequence[tuple[int, float]]]
# Metric families: (panel title, substring of the metric name); whatever matches none is a loss.
FAMILIES = (("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("TIoU", "tiou"), ("animation ratio", "animation_ratio"))
NOT_CURVES = ("val/animation_step",)  # a step number, not a quantity over steps


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def distinct_colors(n: int) -> list:
    """``n`` colours, none repeated: tab10, then tab20's light shades, then evenly spaced hues."""
    import matplotlib

    base = list(matplotlib.colormaps["tab10"].colors) + list(matplotlib.colormaps["tab20"].colors[1::2])
    if n <= len(base):
        return base[:n]
    return [matplotlib.colormaps["hsv"](i / n) for i in range(n)]


def panels(keys) -> dict[str, list[str]]:
    """``{panel title: [metric names]}``: "losses" first, then one panel per metric family present."""
    out: dict[str, list[str]] = {"losses": [], **{title: [] for title, _ in FAMILIES}}
    for key in sorted(keys):
        if key in NOT_CURVES or key.startswith("best/"):
            continue
        family = next((title for title, part in FAMILIES if part in key), "losses")
        out.setdefault(family, []).append(key)
    return {k: v for k, v in out.items() if v}


def _draw(ax, series: Series, logy: bool) -> None:
    drawn = {k: v for k, v in series.items() if v}
    for color, (label, points) in zip(distinct_colors(len(drawn)), drawn.items()):
        steps, values = zip(*points)
        style = "--" if label.startswith("val/") else "-"
        ax.plot(steps, values, style, label=label, color=color, linewidth=1.4, marker="." if len(steps) < 30 else None)
    if logy and drawn and all(v > 0 for pts in drawn.values() for _, v in pts):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def run_curves_figure(series: Series, title: str = ""):
    """One run's curves: a losses panel (log y, train solid, validation dashed) and a panel per
    metric family (linear y)."""
    plt = pyplot()
    groups = panels(series)
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.6 * len(groups) + 0.6), dpi=110, squeeze=False)
    for ax, (name, keys) in zip(axes[:, 0], groups.items()):
        _draw(ax, {k: series[k] for k in keys}, logy=name == "losses")
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_ylabel("loss" if name == "losses" else name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def curves_figure(series: Series, title: str = "", ylabel: str = "loss", logy: bool = True):
    """Named curves of one quantity overlaid (e.g. the same metric of several runs)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    _draw(ax, series, logy)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path) -> Path:
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_run_curves(series: Series, path: str | Path, title: str = "") -> Path:
    return save(run_curves_figure(series, title), path)


def plot_curves(series: Series, path: str | Path, title: str = "", ylabel: str = "loss", logy: bool = True) -> Path:
    return save(curves_figure(series, title, ylabel, logy), path)
