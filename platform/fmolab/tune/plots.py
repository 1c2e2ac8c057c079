"""A search's pictures, logged to its parent run: the optimization history (with each trial's
validation curve, where ASHA cut it), the parameter importances, and parallel coordinates (one axis
per searched parameter and the metric, one line per trial coloured by its result)."""
from __future__ import annotations

import math
from pathlib import Path

from fmolab.plots import pyplot, save


def plot_history(rows: list[dict], path: Path, title: str, metric: str, mode: str) -> Path:
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    xs = list(range(len(rows)))
    ys = [r["best"] for r in rows]
    colors = {"completed": "tab:blue", "stopped early": "tab:orange", "error": "tab:red"}
    for status, color in colors.items():
        pts = [(x, y) for x, y, r in zip(xs, ys, rows) if r["status"] == status and math.isfinite(y)]
        if pts:
            ax1.scatter(*zip(*pts), color=color, label=status, zorder=3)
    better = max if mode == "max" else min
    running, best = [], -math.inf if mode == "max" else math.inf
    for y in ys:
        best = better(best, y) if math.isfinite(y) else best
        running.append(best)
    ax1.step(xs, running, where="post", color="black", linewidth=1.2, label="best so far")
    ax1.set_xlabel("trial")
    ax1.set_ylabel(f"best {metric}")
    ax1.set_title("optimization history")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    for r in rows:  # learning curves: where ASHA cut
        if r["history"]:
            s, v = zip(*r["history"])
            ax2.plot(s, v, marker=".", linewidth=1, color=colors.get(r["status"], "gray"), alpha=0.8)
    ax2.set_xlabel("step")
    ax2.set_ylabel(metric)
    ax2.set_title("validation curves (orange: stopped by ASHA)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_importances(importances: dict[str, float], path: Path, title: str, metric: str) -> Path:
    plt = pyplot()

    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(items) + 1.5), dpi=110)
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel(f"importance for {metric} (fANOVA)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save(fig, path)




def parallel_axes(rows: list[dict], names: list[str], metric: str) -> tuple[list[str], list[list[float]], list[list[str]]]:
    """Axis names (the parameters, then the metric), each finished trial's position on every axis in
    [0, 1] (min..max of numbers, log when they span > 20x; choices by their order), and tick labels."""
    done = [r for r in rows if math.isfinite(r["best"])]
    axes = [*names, metric]
    columns, ticks = [], []
    for a in axes:
        raw = [r["best"] if a == metric else r["params"].get(a) for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw if v is not None)
        if numeric and raw:
            vals = [float(v) if v is not None else math.nan for v in raw]
            finite = [v for v in vals if math.isfinite(v)] or [0.0]
            lo, hi = min(finite), max(finite)
            log = lo > 0 and hi / lo > 20
            f = (lambda v: math.log10(v)) if log else (lambda v: v)
            span = (f(hi) - f(lo)) or 1.0
            columns.append([(f(v) - f(lo)) / span if math.isfinite(v) else math.nan for v in vals])
            ticks.append([f"{lo:.3g}", f"{hi:.3g}"])
        else:
            choices = sorted({str(v) for v in raw}) or [""]
            columns.append([choices.index(str(v)) / max(1, len(choices) - 1) for v in raw])
            ticks.append(choices)
    return axes, [list(p) for p in zip(*columns)] if columns and done else [], ticks


def plot_parallel(rows: list[dict], space, path: Path, title: str) -> Path:
    import matplotlib

    plt = pyplot()
    axes, lines, ticks = parallel_axes(rows, space.names, space.metric)
    done = [r for r in rows if math.isfinite(r["best"])]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(axes)), 4.5), dpi=110)
    cmap = matplotlib.colormaps["viridis" if space.mode == "max" else "viridis_r"]
    for r, pos in zip(done, lines):
        ax.plot(range(len(axes)), pos, color=cmap(pos[-1] if math.isfinite(pos[-1]) else 0.0), alpha=0.85,
                linewidth=1.5, marker="o", markersize=3, label=r["trial"])
    for i, labels in enumerate(ticks):
        ax.axvline(i, color="black", linewidth=0.8)
        for j, text in enumerate(labels):
            ax.annotate(text, (i, j / max(1, len(labels) - 1)), xytext=(4, 0), textcoords="offset points",
                        fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), axes, rotation=15, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{title}: parallel coordinates (colour: {space.metric}, brighter is better)")
    fig.tight_layout()
    return save(fig, path)
