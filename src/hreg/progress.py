"""Console progress of a run: a tqdm bar on a terminal, and log lines anywhere.

The bar (epoch, ETA, latest losses and accuracies) only shows on a TTY; the
log lines, about ten per run, go to the console and to the run's log file, so a
run started by a script or a sweeper still says how far it is.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

log = logging.getLogger("hreg")

LOG_LINES_PER_RUN = 10
#: Hydra's format for job logs, so that every log of a run reads as one.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def _format(metrics: dict[str, float]) -> str:
    return (
        f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.4f} | "
        f"val loss {metrics['val_loss']:.4f} acc {metrics['val_acc']:.4f}"
    )


class Progress:
    """A run's progress: ``bar`` on a terminal (off for a member of a stack, whose stack has the bar)."""

    def __init__(self, epochs: int, first_epoch: int = 1, logger: logging.Logger = log, bar: bool = True) -> None:
        self.log = logger
        self.epochs = epochs
        self.started = time.perf_counter()
        self.first_epoch = first_epoch
        self.log_every = max(1, epochs // LOG_LINES_PER_RUN)
        self.next_log = first_epoch  # log at the first evaluation at or after this epoch
        self.bar = tqdm(
            total=epochs,
            initial=first_epoch - 1,
            unit="epoch",
            dynamic_ncols=True,
            disable=None if bar else True,  # None: shown on a terminal only
            leave=False,
        )

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """What the bar shows after an evaluation."""
        return {
            "loss": f"{metrics['train_loss']:.3f}/{metrics['val_loss']:.3f}",
            "acc": f"{metrics['train_acc']:.3f}/{metrics['val_acc']:.3f}",
        }

    def describe(self, metrics: dict[str, float]) -> str:
        """What a log line says after an evaluation."""
        return _format(metrics)

    def epoch_done(self, epoch: int, metrics: dict[str, float] | None) -> None:
        """Advance the bar; show ``metrics`` when this epoch was evaluated."""
        self.bar.update(1)
        if metrics is None:
            return
        self.bar.set_postfix(self.postfix(metrics), refresh=False)
        if epoch >= self.next_log or epoch == self.epochs:
            self.next_log = (epoch // self.log_every + 1) * self.log_every
            done = epoch - self.first_epoch + 1
            elapsed = time.perf_counter() - self.started
            eta = elapsed / done * (self.epochs - epoch)
            self.log.info("epoch %d/%d | %s | eta %.0fs", epoch, self.epochs, self.describe(metrics), eta)

    def close(self) -> None:
        self.bar.close()
