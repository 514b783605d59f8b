"""Validation of a composed config, before anything is built or trained.

Hydra and OmegaConf already reject unknown group options and unknown keys. What
they cannot know are the ranges that make sense here; each rule below names a
key, what is allowed, and a test. A broken rule becomes one ConfigError line
(``key=value: allowed``) that the entry point prints without a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A user-supplied setting is out of range; the message is one line."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r}: {allowed}")
        self.key = key


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False  # absent or null is fine (e.g. keys of one group option only)


RULES = [
    Rule("epochs", "an integer >= 1", lambda v: _integer(v) and v >= 1),
    Rule("eval_every", "an integer >= 1", lambda v: _integer(v) and v >= 1),
    Rule("seed", "an integer", _integer),
    Rule("objective", "one of val_acc, val_loss", lambda v: v in ("val_acc", "val_loss")),
    Rule("data.batch_size", "an integer >= 1", lambda v: _integer(v) and v >= 1),
    Rule("data.train_fraction", "a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    Rule("data.seed", "an integer", _integer),
    Rule("model.dropout", "a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    Rule("model.hidden", "a list of integers >= 1", lambda v: all(_integer(h) and h >= 1 for h in v)),
    Rule("optimizer.lr", "a number > 0", lambda v: _number(v) and v > 0),
    Rule("optimizer.momentum", "a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1, optional=True),
    Rule("optimizer.weight_decay", "a number >= 0", lambda v: _number(v) and v >= 0, optional=True),
    Rule("regularizer.kind", "one of none, l1, l2", lambda v: v in ("none", "l1", "l2")),
    Rule("regularizer.lam", "a number >= 0", lambda v: _number(v) and v >= 0, optional=True),
    Rule("augment.noise_sigma", "a number >= 0", lambda v: _number(v) and v >= 0, optional=True),
    Rule("augment.degrees", "a number in [0, 180]", lambda v: _number(v) and 0 <= v <= 180, optional=True),
    Rule("augment.translate", "a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1, optional=True),
    Rule(
        "augment.scale",
        "a pair [min, max] with 0 < min <= max",
        lambda v: len(v) == 2 and all(_number(s) for s in v) and 0 < v[0] <= v[1],
        optional=True,
    ),
    Rule("monitor.histograms", "an integer >= 2 (the first and the last epoch)",
         lambda v: _integer(v) and v >= 2, optional=True),
    Rule("checkpoint.every", "an integer >= 0 (0: only at the end)", lambda v: _integer(v) and v >= 0),
    Rule("early_stopping.patience", "null or an integer >= 1", lambda v: _integer(v) and v >= 1, optional=True),
    Rule("device.name", "one of auto, cpu, cuda, mps", lambda v: v in ("auto", "cpu", "cuda", "mps")),
]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first setting that breaks a rule."""
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=None)
        if value is None and rule.optional:
            continue
        plain = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        try:
            ok = plain is not None and rule.test(plain)
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(rule.key, plain, f"must be {rule.allowed}")
