"""Early stopping: a hook that ends a run when its validation objective stops improving."""

from __future__ import annotations

from hreg.hooks import EpochStats, Hook, RunContext
from hreg.stops import EarlyStopped


class EarlyStopping(Hook):
    """Stops when the validation objective has not improved for ``patience`` evaluations."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        if metrics is None or improved:
            return
        best_epoch = ctx.result.best["epoch"]
        waited = sum(1 for h in ctx.result.history if h["epoch"] > best_epoch)
        if waited >= self.patience:
            ctx.result.set_extra(
                "early_stopping", {"patience": self.patience, "best_epoch": best_epoch, "stopped_epoch": epoch}
            )
            raise EarlyStopped(
                f"{ctx.cfg.objective} has not improved for {waited} evaluations since epoch {best_epoch}"
            )
