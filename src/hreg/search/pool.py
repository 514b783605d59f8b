"""The pool: a launcher that asks for jobs one by one as its slots free, instead of taking batches.

hreg's sweep loop (``loop.py``) hands a ``PoolLauncher`` its ``ask`` and ``tell``
(the stacked launcher is one: ``hydra/launcher=stacked``); any other launcher gets
batches of ``hydra.sweeper.n_jobs`` jobs through Hydra's ``Launcher.launch``. The
jobs of a pool's trials are judged by ``search.stacked_pruner`` (trials in lockstep),
the others by ``search.pruner``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

#: What ``ask`` gives: the job's key for ``tell``, its overrides, and the directory it resumes in (or None).
Asked = tuple[Hashable, Sequence[str], Path | None]
#: What ``ask`` gives when no job can be had now but more will be (the study's database does not answer):
#: the pool trains on and asks again at its next turn.
LATER = "later"


class PoolLauncher(Launcher):
    """A launcher that trains the jobs ``ask`` gives until it gives None (``LATER``: none now, ask again), and
    ``tell``s each job's return."""

    @abstractmethod
    def pool(self, ask: Callable[[], Asked | str | None], tell: Callable[[Hashable, JobReturn], None],
             initial_job_idx: int) -> float:
        """Run every job asked; return the occupancy (the mean share of slots training while jobs remained)."""


def on_pool(hydra: DictConfig) -> bool:
    """Whether a sweep's jobs run on a pool: its ``hydra.launcher`` is a ``PoolLauncher``."""
    target = OmegaConf.select(hydra, "launcher._target_", default=None)
    try:
        return target is not None and issubclass(get_class(str(target)), PoolLauncher)
    except Exception:  # a launcher that cannot be imported is no pool
        return False
