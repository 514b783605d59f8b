"""The report's figures: PNG files drawn with matplotlib's Agg canvas (no display needed).

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot,
so nothing depends on a GUI backend or on global state. Each configuration
keeps one colour in every figure.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hreg.report.runs import Run
from hreg.report.stats import t_interval

LOSS_CURVES = "loss_curves.png"
ACCURACY = "accuracy.png"
WEIGHTS = "weights.png"
MAX_ENTROPY = math.log(10)
LEGEND_WIDTH = 70  # characters per line of a legend entry

#: One colour per configuration label, the same in every figure.
Colours = dict[str, tuple[float, ...]]


def colours(labels: list[str]) -> Colours:
    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def _wrap(label: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")


def loss_curves(groups: dict[str, list[Run]], colour: Colours, path: Path) -> None:
    """Training and validation loss against epochs, one line per configuration: the mean over its
    runs at each evaluated epoch, with a band from the lowest to the highest run."""
    labels = {label: _wrap(f"{label} (n={len(members)})", LEGEND_WIDTH) for label, members in groups.items()}
    columns = 2 if len(labels) > 1 else 1
    legend_lines = sum(sorted((t.count("\n") + 1 for t in labels.values()), reverse=True)[:: columns])
    # The legend sits below the panels and grows with the labels (an Optuna sweep's are long and many).
    fig = Figure(figsize=(13, 5.5 + 0.6 + 0.2 * legend_lines), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, split, title in zip(axes, ("train", "val"), ("Training set", "Validation set")):
        for label, members in groups.items():
            by_epoch: dict[int, list[float]] = {}
            for run in members:
                for h in run.result.history if run.result else []:
                    loss = h.get(f"{split}_loss", math.nan)
                    if math.isfinite(loss):
                        by_epoch.setdefault(h["epoch"], []).append(loss)
            if not by_epoch:
                continue
            epochs = sorted(by_epoch)
            mean = [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
            ax.plot(epochs, mean, color=colour[label], label=labels[label])
            if len(members) > 1:
                low, high = [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs]
                ax.fill_between(epochs, low, high, color=colour[label], alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_title(f"{title}: cross-entropy loss")
        ax.set_xlabel("epoch")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("cross-entropy loss (nats, log scale; eval mode, no penalty)")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncols=columns,
               title="configuration (runs); band: min–max", fontsize="small")
    fig.suptitle("Loss curves per configuration (line: mean over seeds)")
    _save(fig, path)


def _points(ax: Axes, groups: dict[str, list[Run]], value: Callable[[Run], float], colour: Colours) -> None:
    """One row per configuration: its mean as a diamond with its 95% t interval as an error bar, each run as a dot.

    Points rather than bars: the axis then zooms on the values, so that a difference of
    half a point in accuracy is visible.
    """
    for y, label in enumerate(groups):
        values = [v for v in (value(r) for r in groups[label]) if math.isfinite(v)]
        if not values:
            continue
        interval = t_interval(values)
        half = interval.high - interval.mean if interval.n > 1 else 0.0
        ax.errorbar(interval.mean, y, xerr=half, fmt="D", color=colour[label], markersize=8, capsize=5)
        ax.plot(values, [y] * len(values), "o", color="black", markersize=3, alpha=0.7)
    ax.grid(True, alpha=0.3)


def _point_figure(
    groups: dict[str, list[Run]],
    panels: list[tuple[str, str, Callable[[Run], float]]],
    title: str,
    colour: Colours,
) -> Figure:
    """A row of panels (title, x-axis label, value of a run), configurations on a shared y axis, first on top."""
    labels = [_wrap(label) for label in groups]
    lines = max(label.count("\n") + 1 for label in labels)  # long labels (an Optuna trial's) need taller rows
    fig = Figure(figsize=(5 * len(panels), 2.2 + len(groups) * max(0.5, 0.2 * lines)), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (panel_title, xlabel, value) in zip(axes, panels):
        _points(ax, groups, value, colour)
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
    axes[0].set_yticks(range(len(groups)), labels)
    axes[0].set_ylim(len(groups) - 0.5, -0.5)  # shared: the first configuration on top in every panel
    fig.suptitle(f"{title}\ndiamond: mean over seeds, error bar: its 95% confidence interval (Student t), "
                 "dots: single runs")
    return fig


def accuracy(groups: dict[str, list[Run]], colour: Colours, path: Path) -> None:
    fig = _point_figure(
        groups,
        [
            ("Test accuracy", "test accuracy (%)", lambda r: 100 * r.final("test_acc")),
            ("Overfitting", "train − validation accuracy (percentage points)", lambda r: 100 * r.final("gap")),
        ],
        "Final accuracy per configuration",
        colour,
    )
    _save(fig, path)


def weights(groups: dict[str, list[Run]], colour: Colours, path: Path) -> None:
    untrained = [r.extra("random_model_entropy") for rs in groups.values() for r in rs if r.extra("random_model_entropy")]
    reference = f"untrained model {statistics.mean(untrained):.2f}, " if untrained else ""
    fig = _point_figure(
        groups,
        [
            ("Sparsity (what L1 does)", "near-zero Linear weights, |w| < 1e-3 (%)",
             lambda r: 100 * r.end_state("near_zero_share")),
            ("Weight norm (what L2 does)", "L2 norm of all Linear weights", lambda r: r.end_state("l2_norm")),
            ("Confidence (low entropy: confident)",
             f"mean prediction entropy (nats; {reference}uniform ln 10 = {MAX_ENTROPY:.2f})",
             lambda r: r.end_state("entropy_mean")),
        ],
        "What each configuration does to the weights and predictions, at the end of training",
        colour,
    )
    _save(fig, path)


def draw_all(groups: dict[str, list[Run]], finished: dict[str, list[Run]], out_dir: Path) -> list[tuple[str, str]]:
    """Draw what the runs allow: curves from every run with a history, point plots from finished runs.

    Returns (file name, title) of each figure written.
    """
    drawn = []
    colour = colours(list(groups))
    if any(r.result and r.result.history for rs in groups.values() for r in rs):
        loss_curves(groups, colour, out_dir / LOSS_CURVES)
        drawn.append((LOSS_CURVES, "Training and validation loss per configuration"))
    if finished:
        accuracy(finished, colour, out_dir / ACCURACY)
        weights(finished, colour, out_dir / WEIGHTS)
        drawn += [(ACCURACY, "Test accuracy and train-validation gap"), (WEIGHTS, "Weights and prediction entropy")]
    return drawn
