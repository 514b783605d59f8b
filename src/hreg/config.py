"""Validation of a composed config, before anything is built or trained.

Hydra and OmegaConf already reject unknown group options and unknown keys. What
they cannot know are the ranges that make sense here; each rule below names a
key, what is allowed, and a test. Option lists come from the modules that own
them. A broken rule becomes one ConfigError line (``key=value: allowed``) that
the entry point prints without a traceback. Some settings are fine alone and
wrong together (a batch of one image with BatchNorm): ``COMBINED_RULES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hreg.data import MNIST_TRAIN_SIZE, train_size
from hreg.device import NAMES as DEVICES
from hreg.engines import ENGINES
from hreg.errors import ConfigError
from hreg.regularizer import KINDS as REGULARIZERS
from hreg.result import OBJECTIVES
from hreg.schedule import LR_SCHEDULES

__all__ = ["RUN_CONFIG_KEYS", "given", "is_integer", "is_number", "is_run_config", "validate", "validate_launcher"]


#: What an hreg run's config holds at the top level (train.py writes all of them to .hydra/config.yaml).
RUN_CONFIG_KEYS = ("data", "model", "regularizer", "augment", "optimizer", "device", "epochs", "eval_every",
                   "seed", "objective", "checkpoint", "early_stopping")


def is_run_config(cfg: DictConfig) -> bool:
    """Whether ``cfg`` is an hreg run's config (not another application's, run by hreg's launcher)."""
    return all(key in cfg for key in RUN_CONFIG_KEYS)


def given(overrides: Any) -> set[str]:
    """The keys a list of overrides sets (``+key=v`` and ``~key`` included): what a default must leave alone.
    A ListConfig is read unresolved (a sweep's ``hydra.sweep.subdir`` names ``${hydra.job.num}``)."""
    if isinstance(overrides, ListConfig):
        overrides = OmegaConf.to_container(overrides, resolve=False)
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool (YAML's ``true`` is no number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(options: tuple[str, ...] | dict[str, Any]) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {', '.join(options)}", lambda v: v in options


#: Seeds as NumPy and Lightning take them (torch takes more; a run also seeds with ``seed + 1``).
SEEDS = f"an integer in [0, {2**32 - 1}]"
MAX_THREADS = 4096
MNIST_PIXELS, MNIST_CLASSES = 784, 10


def _seed(value: Any) -> bool:
    return is_integer(value) and 0 <= value < 2**32


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False  # absent or null is fine (e.g. keys of one group option only)
    nullable: bool = True  # with optional: False when only absence is fine (null would reach the code)


RULES = [
    Rule("epochs", "an integer >= 1", lambda v: is_integer(v) and v >= 1),
    Rule("eval_every", "an integer >= 1", lambda v: is_integer(v) and v >= 1),
    Rule("lr_schedule", *_one_of(LR_SCHEDULES)),
    Rule("seed", SEEDS, _seed),
    # Optional: the configs of runs saved before the setting existed have none (auto).
    Rule("threads", f"auto or an integer in [1, {MAX_THREADS}]",
         lambda v: v == "auto" or (is_integer(v) and 1 <= v <= MAX_THREADS), optional=True),
    Rule("overwrite", "true or false", lambda v: isinstance(v, bool), optional=True),
    Rule("objective", *_one_of(OBJECTIVES)),
    Rule("data.batch_size", "an integer >= 1", lambda v: is_integer(v) and v >= 1),
    Rule(
        "data.train_fraction",
        f"a number in (0, 1] that leaves at least one training image (>= {1 / (2 * MNIST_TRAIN_SIZE):.2g})",
        lambda v: is_number(v) and 0 < v <= 1 and train_size(v) >= 1,
    ),
    Rule("data.seed", SEEDS, _seed),
    Rule("model.in_features", f"{MNIST_PIXELS} (MNIST's 28 x 28 pixels)", lambda v: v == MNIST_PIXELS),
    Rule("model.num_classes", f"{MNIST_CLASSES} (MNIST's digits)", lambda v: v == MNIST_CLASSES),
    Rule("model.norm", "null or a normalisation layer (model/norm=batchnorm or layernorm)",
         lambda v: isinstance(v, dict), optional=True),
    Rule("model.norm.eps", "a number > 0", lambda v: is_number(v) and v > 0, optional=True, nullable=False),
    Rule("model.norm.momentum", "a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1, optional=True),
    Rule("model.dropout", "a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    Rule("model.hidden", "a non-empty list of integers >= 1", lambda v: len(v) > 0 and all(is_integer(h) and h >= 1 for h in v)),
    Rule("optimizer.lr", "a number > 0", lambda v: is_number(v) and v > 0),
    Rule("optimizer.momentum", "a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1, optional=True, nullable=False),
    Rule("optimizer.fused", "true or false", lambda v: isinstance(v, bool), optional=True),
    Rule("optimizer.weight_decay", "a number >= 0", lambda v: is_number(v) and v >= 0, optional=True, nullable=False),
    Rule("regularizer.kind", *_one_of(REGULARIZERS)),
    Rule("regularizer.lam", "a number >= 0", lambda v: is_number(v) and v >= 0, optional=True, nullable=False),
    Rule("augment.noise_sigma", "a number >= 0", lambda v: is_number(v) and v >= 0, optional=True, nullable=False),
    Rule("augment.degrees", "a number in [0, 180]", lambda v: is_number(v) and 0 <= v <= 180, optional=True, nullable=False),
    Rule("augment.translate", "a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1, optional=True, nullable=False),
    Rule("augment.elastic_alpha", "a number >= 0 (pixels)", lambda v: is_number(v) and v >= 0, optional=True, nullable=False),
    Rule("augment.elastic_sigma", "a number in (0, 10] (pixels)", lambda v: is_number(v) and 0 < v <= 10, optional=True, nullable=False),
    Rule("augment.per_image", "true or false", lambda v: isinstance(v, bool), optional=True),
    Rule(
        "augment.scale",
        "a pair [min, max] with 0 < min <= max",
        lambda v: len(v) == 2 and all(is_number(s) for s in v) and 0 < v[0] <= v[1],
        optional=True,
        nullable=False,
    ),
    Rule("monitor", "null or a monitor (monitor=tensorboard or none)", lambda v: isinstance(v, dict), optional=True),
    Rule("monitor.histograms", "an integer >= 2 (the first and the last epoch)",
         lambda v: is_integer(v) and v >= 2, optional=True, nullable=False),
    Rule("monitor.hparams", "true or false", lambda v: isinstance(v, bool), optional=True, nullable=False),
    Rule("checkpoint.every", "an integer >= 0 (0: only at the end)", lambda v: is_integer(v) and v >= 0),
    Rule("early_stopping.patience", "null or an integer >= 1", lambda v: is_integer(v) and v >= 1, optional=True),
    Rule("device.name", *_one_of(DEVICES)),
    Rule("engine.name", *_one_of(ENGINES)),
    Rule("train.cuda_graph", "one of auto, true, false", lambda v: v in ("auto", True, False)),
    Rule("search.outage_limit_s", "a number > 0 (seconds)", lambda v: is_number(v) and v > 0, optional=True, nullable=False),
    Rule("search.heartbeat_s", "null or an integer >= 1 (seconds)", lambda v: is_integer(v) and v >= 1, optional=True),
]


def _batchnorm_batch_of_one(cfg: DictConfig) -> ConfigError | None:
    norm = OmegaConf.select(cfg, "model.norm._target_", default=None)
    if norm and norm.endswith("BatchNorm1d") and (cfg.data.batch_size == 1 or train_size(cfg.data.train_fraction) == 1):
        return ConfigError(
            "data.batch_size", cfg.data.batch_size,
            "BatchNorm cannot train on a batch of one image (its variance is undefined): "
            "use batches of 2 or more images, or another model/norm",
        )
    return None


#: The settings of hreg's own launchers (``hydra.launcher.*``); a multirun checks them before any job.
LAUNCHER_RULES = [
    Rule("max_members", "null or an integer >= 1", lambda v: is_integer(v) and v >= 1, optional=True),
    *(Rule(key, f"an integer >= {low}", lambda v, low=low: is_integer(v) and v >= low, optional=True) for key, low in (
        # The submitit launchers' (Hydra already refuses a value of the wrong type; null where it may be).
        ("timeout_min", 1), ("cpus_per_task", 1), ("gpus_per_node", 0), ("tasks_per_node", 1), ("mem_gb", 1),
        ("nodes", 1), ("cpus_per_gpu", 1), ("gpus_per_task", 0), ("signal_delay_s", 0), ("max_num_timeout", 0),
        ("array_parallelism", 1),
    )),
    *(Rule(key, "a non-empty string", lambda v: isinstance(v, str) and v.strip() != "", optional=True)
      for key in ("submitit_folder", "name")),
]

COMBINED_RULES: list[Callable[[DictConfig], ConfigError | None]] = [_batchnorm_batch_of_one]


_ABSENT = object()


def _check(cfg: DictConfig, rules: list[Rule], prefix: str = "") -> None:
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        if rule.optional and (value is _ABSENT or (value is None and rule.nullable)):
            continue
        value = None if value is _ABSENT else value
        plain = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        try:
            ok = plain is not None and rule.test(plain)
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(prefix + rule.key, plain, f"must be {rule.allowed}")


def validate_launcher(hydra: DictConfig) -> None:
    """Raise ConfigError for the first ``hydra.launcher.*`` setting of hreg's launchers that breaks a rule."""
    _check(hydra.launcher, LAUNCHER_RULES, "hydra.launcher.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first setting that breaks a rule."""
    _check(cfg, RULES)
    for combined in COMBINED_RULES:
        error = combined(cfg)
        if error:
            raise error
