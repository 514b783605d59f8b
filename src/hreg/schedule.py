"""When things happen in a run: the batches of an epoch, and the epochs that are evaluated.

Every engine trains and evaluates on this schedule, so that a run's record has
the same evaluations whatever trained it.
"""

from __future__ import annotations


def is_eval_epoch(epoch: int, epochs: int, every: int) -> bool:
    """Evaluate at the first and last epoch and every ``every`` epochs (epochs count from 1)."""
    return epoch == 1 or epoch == epochs or epoch % every == 0


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over ``n`` shuffled images.

    A last batch of a single image is skipped (BatchNorm cannot train on one
    image, and one image is no batch); with a fresh order every epoch, each
    image is still seen. Batches of one throughout (``batch_size=1``) stay.
    """
    stop = n - 1 if n % batch_size == 1 and n > batch_size else n
    return [(start, min(start + batch_size, stop)) for start in range(0, stop, batch_size)]
