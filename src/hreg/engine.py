"""The `engine` config group: which loop trains a run.

``native`` is hreg's own epoch loop (``loop.fit``). ``lightning`` trains the
same built parts through Lightning's Trainer (``lightning_engine.fit``,
imported only then). Both keep the run record through ``loop.begin_run`` /
``end_epoch`` / ``end_run``, so reports, sweeps and ``hreg-study`` read either.
(The stacked launcher is a third engine, for many runs at once: hreg/stacked/.)
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from hreg import loop
from hreg.hooks import Hook, RunContext
from hreg.result import Status

ENGINES = ("native", "lightning")


def engine_name(cfg: DictConfig) -> str:
    """The engine a config asks for (``native`` for configs written before the group existed)."""
    return cfg.get("engine", {}).get("name", "native")


def fit(ctx: RunContext, hooks: Sequence[Hook], first_epoch: int = 1) -> Status:
    """Train ``ctx`` with the configured engine; returns how the run ended."""
    if engine_name(ctx.cfg) == "lightning":
        from hreg.lightning_engine import fit as fit_with_lightning

        return fit_with_lightning(ctx, hooks, first_epoch)
    return loop.fit(ctx, hooks, first_epoch)
