"""The search space (``search.space``): sampled once per trial, checked once before the sweep.

``suggest`` is the sweeper's ``custom_search_space`` hook: it samples every entry
and skips one whose ``when`` fails, so a trial never records a parameter that
did not apply. ``check_space`` refuses, before anything runs, what Optuna would
refuse in the first trial (with a traceback and a trial left behind without
parameters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from hreg.config import is_integer, is_number
from hreg.search.study import SearchError

if TYPE_CHECKING:
    from optuna.trial import Trial

TYPES = ("float", "int", "categorical")


def _current_value(cfg: DictConfig, trial: Trial, param: str) -> Any:
    """A parameter's value for this trial: sampled, fixed on the command line, or the config's."""
    if param in trial.params:
        return trial.params[param]
    if param in trial.user_attrs:
        return trial.user_attrs[param]
    choices = cfg.hydra.runtime.choices
    return choices[param] if param in choices else OmegaConf.select(cfg, param)


def _applies(cfg: DictConfig, trial: Trial, when: DictConfig | None) -> bool:
    if not when:
        return True
    return all(str(_current_value(cfg, trial, p)) in [str(v) for v in allowed] for p, allowed in when.items())


def _sample(trial: Trial, entry: DictConfig) -> None:
    name, kind = entry.param, entry.type
    if kind == "categorical":
        trial.suggest_categorical(name, list(entry.choices))
    elif kind == "float":
        trial.suggest_float(name, entry.low, entry.high, log=entry.get("log", False), step=entry.get("step"))
    else:
        trial.suggest_int(name, entry.low, entry.high, log=entry.get("log", False), step=entry.get("step") or 1)


def entries(cfg: DictConfig) -> DictConfig:
    """``search.space``, empty where the user removed it (``~search.space``: only the command line's sweeps)."""
    space = cfg.search.get("space")
    return space if space is not None else OmegaConf.create({})


def suggest(cfg: DictConfig, trial: Trial) -> None:
    """The sweeper's ``custom_search_space`` hook: sample ``search.space`` into ``trial``.

    Entries already set (sampled from a command-line sweep, or fixed by a plain
    override) are left alone; an entry whose ``when`` fails is not sampled.
    """
    for entry in entries(cfg).values():
        taken = entry.param in trial.params or entry.param in trial.user_attrs
        if not taken and _applies(cfg, trial, entry.get("when")):
            _sample(trial, entry)


def _entry_problem(entry: Any) -> tuple[str, Any, str] | None:
    """(key within the entry, its value, what is wrong) for the first problem of one entry, or None."""
    if not isinstance(entry, DictConfig):
        return "", entry, "must be a mapping with param, type and its range or choices"
    if not isinstance(entry.get("param"), str) or not entry.param:
        return "param", entry.get("param"), "must name the override a trial runs with, e.g. optimizer.lr"
    kind = entry.get("type")
    if kind not in TYPES:
        return "type", kind, f"must be one of {', '.join(TYPES)}"
    if kind == "categorical":
        choices = entry.get("choices")
        if not OmegaConf.is_list(choices) or len(choices) == 0:
            return "choices", choices, "must be a non-empty list"
    else:
        low, high, log, step = entry.get("low"), entry.get("high"), entry.get("log", False), entry.get("step")
        number = is_number if kind == "float" else is_integer
        for key, value in (("low", low), ("high", high)):
            if not number(value):
                return key, value, f"must be {'a number' if kind == 'float' else 'an integer'}"
        if low > high:
            return "low", low, f"must be <= high ({high})"
        if not isinstance(log, bool):
            return "log", log, "must be true or false"
        if log and low <= 0:
            return "low", low, "must be > 0 on a log scale (log: true)"
        if step is not None and (not number(step) or step <= 0):
            return "step", step, "must be a positive number"
        if step is not None and log:
            return "step", step, "cannot be combined with log: true"
    when = entry.get("when")
    if when is not None and not (
        isinstance(when, DictConfig) and all(OmegaConf.is_list(v) and len(v) > 0 for v in when.values())
    ):
        return "when", when, "must map parameters to non-empty lists of the values that enable this one"
    return None


def check_space(space: Any) -> None:
    """Refuse, with one line naming the key, any entry of ``search.space`` that Optuna would refuse."""
    if not isinstance(space, DictConfig):
        raise SearchError(f"search.space={space!r}: must be a mapping of named entries")
    for name in space:
        problem = _entry_problem(space[name])
        if problem:
            key, value, allowed = problem
            where = f"search.space.{name}" + (f".{key}" if key else "")
            plain = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
            raise SearchError(f"{where}={plain!r}: {allowed}")


def check_conditional_sweeps(config: DictConfig) -> None:
    """A command-line sweep over a dependent parameter would be sampled in every trial: refuse it."""
    dependent = {e.param: name for name, e in entries(config).items() if e.get("when")}
    for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        key = override.get_key_element()
        if override.is_sweep_override() and key in dependent:
            raise SearchError(
                f"{key}: depends on another parameter, so it cannot be swept on the command line; "
                f"change its range with search.space.{dependent[key]}.low=... / .high=..."
            )
