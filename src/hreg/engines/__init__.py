"""The engines: what trains a run, each inside the one run lifecycle (``hreg.lifecycle``).

- ``native``: hreg's own epoch loop (``engines.native``), with its CUDA graph (``engines.graph``);
- ``lightning``: the same built parts through Lightning's Trainer (``engines.lightning``, imported only then);
- ``stacked``: many runs trained as one batched model (``engines.stacked``), by the Hydra launcher
  ``hydra/launcher=stacked`` rather than by the ``engine`` config group.

Every engine calls ``Lifecycle`` for each run it trains, so every run's record,
hooks, status and exit code behave the same whatever trained it. No engine
imports another.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from hreg.hooks import Hook, RunContext
from hreg.result import Status

#: The ``engine`` config group's choices.
ENGINES = ("native", "lightning")


def engine_name(cfg: DictConfig) -> str:
    """The engine a config asks for (``native`` for configs written before the group existed)."""
    return cfg.get("engine", {}).get("name", "native")


def fit(ctx: RunContext, hooks: Sequence[Hook], first_epoch: int = 1) -> Status:
    """Train ``ctx`` with the configured engine; returns how the run ended."""
    if engine_name(ctx.cfg) == "lightning":
        from hreg.engines.lightning import fit as fit_with_lightning

        return fit_with_lightning(ctx, hooks, first_epoch)
    from hreg.engines.native import fit as fit_natively

    return fit_natively(ctx, hooks, first_epoch)
