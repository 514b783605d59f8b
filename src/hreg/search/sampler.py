"""The sampler of ``hydra.sweeper.sampler``, built for today's Optuna from the plugin's config groups.

The plugin's sampler configs (``hydra/sweeper/sampler=tpe``, ``random``,
``cmaes``, ``nsgaii``, ``grid``, ``motpe``) list every argument of the 2021
samplers with its default. Optuna 5 deprecates some of those arguments (TPE's
``consider_prior``...) and removed ``MOTPESampler``. So a sampler is given only the
arguments a user set to something other than the config's default; Optuna's own
defaults do the rest. An argument set by the user that the class does not take
is refused in one line, and so is a class that no longer exists: the line names
the replacement. Any class works with ``_target_``
(``hydra.sweeper.sampler._target_=optuna.samplers.GPSampler``).

hreg adds its own defaults (``DEFAULTS``) where the user set nothing: TPE with
``group=True``, which models each parameter that applies only to some trials
(``lam`` with ``l1``/``l2``, the elastic field's with elastic augmentation) with
the parameters it is drawn beside, instead of sampling it independently. On the
default space it made the search's worst seed as good as the others
(benchmarks/README.md, ``bench_quality.py``); ``+hydra.sweeper.sampler.group=false``
turns it off.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import ExperimentalWarning

from hreg.search.study import SearchError

if TYPE_CHECKING:
    from hreg.search.distributions import Space

#: Samplers that Optuna removed, and what replaces each.
REMOVED = {
    "optuna.samplers.MOTPESampler": "hydra/sweeper/sampler=tpe (TPESampler handles several objectives since Optuna 3)",
}

#: hreg's arguments for a sampler class, where the user set none of them (Optuna marks ``group`` experimental:
#: its warning is not shown for hreg's own default).
DEFAULTS = {
    "optuna.samplers.TPESampler": {"group": True},
}


def _config_defaults(choice: str | None) -> dict[str, Any]:
    """The defaults of the ``hydra/sweeper/sampler`` option ``choice`` (none without one)."""
    if not choice:
        return {}
    return OmegaConf.to_container(ConfigStore.instance().load(f"hydra/sweeper/sampler/{choice}.yaml").node)


def set_arguments(node: DictConfig, choice: str | None) -> dict[str, Any]:
    """The sampler's arguments that differ from the defaults of its config option ``choice`` (the
    ``hydra/sweeper/sampler`` group's; ``_target_`` and ``_partial_`` left out)."""
    defaults = _config_defaults(choice)
    values = OmegaConf.to_container(node, resolve=True)
    missing = object()
    return {k: v for k, v in values.items() if not k.startswith("_") and defaults.get(k, missing) != v}


def sampler_factory(node: DictConfig, choice: str | None) -> Callable[..., Any]:
    """A callable giving the sampler of ``node``, composed from the ``hydra/sweeper/sampler`` option ``choice``
    (the grid sampler wants its search space: ``factory(search_space)``)."""
    target = str(node._target_)
    if target in REMOVED:
        raise SearchError(f"hydra.sweeper.sampler._target_={target}: removed from Optuna; use {REMOVED[target]}")
    try:
        cls = get_class(target)
    except Exception:
        raise SearchError(f"hydra.sweeper.sampler._target_={target}: no such class in this Optuna") from None
    given = set_arguments(node, choice)
    ours = {name: value for name, value in DEFAULTS.get(target, {}).items() if name not in given}
    arguments = {**ours, **given}
    accepted = inspect.signature(cls).parameters
    for name, value in arguments.items():
        if name not in accepted:
            raise SearchError(f"hydra.sweeper.sampler.{name}={value!r}: {cls.__name__} takes no such argument")

    def build(*args: Any) -> Any:
        try:
            with warnings.catch_warnings():
                for name in ours:
                    warnings.filterwarnings("ignore", f"Argument ``{name}``", ExperimentalWarning)
                return cls(*args, **arguments)
        except (TypeError, ValueError) as error:
            raise SearchError(f"hydra.sweeper.sampler ({target}): {error}") from None

    return build


def build_sampler(node: DictConfig, choice: str | None, space: Space) -> tuple[Any, int | None]:
    """The sampler of ``node`` for ``space``; with the grid sampler, also the number of points of its grid
    (no more trials are worth asking)."""
    factory = sampler_factory(node, choice)
    if str(node._target_) != "optuna.samplers.GridSampler":
        return factory(), None
    grid = space.grid()
    return factory(grid), math.prod(len(v) for v in grid.values())
