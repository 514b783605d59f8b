"""``optimization_history.png``: how the whole search went, every trial in it.

Optuna's own history plot draws completed trials only; a search on a pool of stacks prunes
most of its trials, so it drew two or three points. Here every trial that reported is a
point at its last value (pruned ones hollow, at the value they were stopped with), the
selected trial is a star, and the best completed value so far is a step line, against the
trial number and against the time since the search began.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402


def last_value(trial: FrozenTrial) -> float | None:
    """A completed trial's value, a pruned (or failed) one's last reported value, else None."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def _minutes(trial: FrozenTrial, start: datetime) -> float | None:
    end = trial.datetime_complete
    return None if end is None else (end - start).total_seconds() / 60


def best_so_far(points: list[tuple[float, float]], maximize: bool) -> tuple[list[float], list[float]]:
    """The running best of (x, value) points taken in order of x, as step-line coordinates."""
    xs, ys = [], []
    best = None
    for x, value in sorted(points):
        if best is None or (value > best if maximize else value < best):
            best = value
        xs.append(x)
        ys.append(best)
    return xs, ys


def plot_history(study: optuna.Study, path: Path) -> bool:
    """Draw the history into ``path``; False (nothing drawn) when no trial has reported a value."""
    trials = [t for t in study.trials if last_value(t) is not None]
    if not trials:
        return False
    maximize = study.direction == StudyDirection.MAXIMIZE
    start = min(t.datetime_start for t in study.trials if t.datetime_start is not None)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    selected = study.best_trial if completed else None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True, layout="constrained")
    for ax, where, xlabel in ((axes[0], lambda t: t.number, "trial"),
                              (axes[1], lambda t: _minutes(t, start), "minutes since the search began")):
        for state, style in ((TrialState.PRUNED, dict(marker="o", facecolors="none", edgecolors="tab:gray")),
                             (TrialState.FAIL, dict(marker="x", color="tab:red")),
                             (TrialState.COMPLETE, dict(marker="o", color="tab:blue"))):
            shown = [t for t in trials if t.state == state and where(t) is not None]
            if shown:
                ax.scatter([where(t) for t in shown], [last_value(t) for t in shown], s=28,
                           label=f"{state.name.lower()} ({len(shown)})", **style)
        done = [(where(t), t.value) for t in completed if where(t) is not None]
        if done:
            ax.step(*best_so_far(done, maximize), where="post", color="tab:blue", alpha=0.6, label="best completed so far")
        if selected is not None and where(selected) is not None:
            ax.scatter([where(selected)], [selected.value], marker="*", s=220, color="gold", edgecolors="black",
                       zorder=3, label=f"selected: trial {selected.number}")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("objective (pruned: its last report)")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize="small")
    fig.suptitle(f"{len(study.trials)} trials: {len(completed)} completed, "
                 f"{sum(t.state == TrialState.PRUNED for t in study.trials)} pruned")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True
