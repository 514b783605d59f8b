"""Hydra's sweep syntax as Optuna distributions, and a trial's draw from one, through public APIs only.

A search's parameters come from the command line and ``hydra.sweeper.params``
(``interval(0.1, 1)``, ``tag(log, interval(1e-4, 1e-1))``, ``choice(a, b)``,
``range(1, 5)``; Hydra's ``OverridesParser``) or from the deprecated
``hydra.sweeper.search_space`` (the Optuna sweeper plugin's ``DistributionConfig``).
Each becomes one of Optuna's ``FloatDistribution``, ``IntDistribution`` and
``CategoricalDistribution``, the same classes ``search.space`` draws with, so that a
study never mixes two kinds for one parameter. A plain override (``epochs=5``) is a
fixed parameter: every trial runs with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from omegaconf import DictConfig

from hreg.search.space import entries, suggest as suggest_entries
from hreg.search.study import SearchError


def _choices(override: Override) -> CategoricalDistribution:
    return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))


def from_override(override: Override) -> BaseDistribution | str:
    """The distribution of a sweep override, or a plain override's value (as the job will be given it)."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return _choices(override)
    if override.is_range_sweep():
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(v, float) for v in (start, stop, step)):  # both ends in, as the Optuna plugin drew it
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SearchError(f"{override.input_line}: a search takes interval(), choice(), range() or a plain value")


def from_overrides(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions of the sweep overrides, values of the plain ones), by key."""
    distributions, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(arguments):
        drawn = from_override(override)
        if isinstance(drawn, BaseDistribution):
            distributions[override.get_key_element()] = drawn
        else:
            fixed[override.get_key_element()] = drawn
    return distributions, fixed


def from_config(entry: Mapping[str, Any]) -> BaseDistribution:
    """One entry of ``hydra.sweeper.search_space`` (type, low, high, log, step, choices)."""
    kind = str(getattr(entry["type"], "name", entry["type"]))
    if kind == "categorical":
        return CategoricalDistribution(list(entry["choices"]))
    log, step = bool(entry.get("log", False)), entry.get("step")
    if kind == "int":
        return IntDistribution(int(entry["low"]), int(entry["high"]), log=log, step=1 if log else int(step or 1))
    if kind == "float":
        return FloatDistribution(float(entry["low"]), float(entry["high"]), log=log, step=step)
    raise SearchError(f"hydra.sweeper.search_space: type {kind!r} must be int, float or categorical")


def suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    """Draw ``name`` in ``trial`` from ``distribution`` with the trial's public ``suggest_*`` methods."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, list(distribution.choices))
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def grid_choices(name: str, distribution: BaseDistribution) -> list[Any]:
    """Every value the grid sampler tries for ``name``: a categorical's choices, or a stepped range, both ends in."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if distribution.step is None or distribution.log:
        raise SearchError(f"{name}: the grid sampler needs choice(), range() or an integer interval, not a "
                          "continuous or log-scaled one")
    count = int(round((distribution.high - distribution.low) / distribution.step)) + 1
    return [distribution.low + i * distribution.step for i in range(count)]


class Space:
    """A sweep's search space: the distributions of its sweep overrides, ``hydra.sweeper.params`` and (without
    params, as in the plugin) ``hydra.sweeper.search_space``; its fixed values; and ``extend``, the
    ``custom_search_space`` hook (``search.space``), called as ``extend(config, trial)``."""

    def __init__(self, arguments: list[str], params: Mapping[str, Any] | None, search_space: Mapping[str, Any] | None,
                 extend: Callable[[DictConfig, Trial], None] | None, config: DictConfig) -> None:
        self.distributions = {} if params is not None else {
            str(k): from_config(v) for k, v in (search_space or {}).items()}
        drawn, self.fixed = from_overrides([f"{k}={v}" for k, v in (params or {}).items()] + list(arguments))
        self.distributions.update(drawn)
        for name in self.fixed:
            self.distributions.pop(name, None)
        self.extend, self.config = extend, config

    def grid(self) -> dict[str, list[Any]]:
        """Every value the grid sampler tries, by parameter: the sweeps' only, so ``extend`` must draw nothing (a
        grid cannot hold what it would draw in every trial)."""
        if self.extend is not None and (self.extend is not suggest_entries or len(entries(self.config))):
            raise SearchError("hydra/sweeper/sampler=grid: the grid holds the command line's choice() and range() "
                              "sweeps only, and search.space would draw more in every trial; turn it off with "
                              "~search.space or hydra.sweeper.custom_search_space=null")
        return {name: grid_choices(name, d) for name, d in self.distributions.items()}

    def draw(self, trial: Trial) -> list[str]:
        """Sample ``trial``; the overrides of its job (its sampled and fixed parameters). Optuna's ValueError
        when the study drew a parameter from another distribution before."""
        for name, distribution in self.distributions.items():
            suggest(trial, name, distribution)
        for name, value in self.fixed.items():
            trial.set_user_attr(name, value)
        if self.extend:
            self.extend(self.config, trial)
        overlap = trial.params.keys() & self.fixed.keys()
        if overlap:
            raise SearchError(f"{', '.join(sorted(overlap))}: both fixed and searched; give each one way only")
        return [f"{name}={value}" for name, value in {**trial.params, **self.fixed}.items()]
