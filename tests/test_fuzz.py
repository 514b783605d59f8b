"""A fuzzer over every setting: any value of any key is refused with one line naming the key, or trains.

Each draw takes one leaf of a composed config (every group's keys, top-level settings, ``search.*``,
``engine.trainer.*``, ``hydra.launcher.*`` of the stacked and submitit launchers) and a value a user
might type: of the wrong type, out of range, huge, tiny, negative, NaN/inf, empty, or a valid edge.
It goes through
Hydra's own override parser and merge, as on the command line (Hydra refuses some itself, in its own
one line), then through the checks the entry points run before anything is built. Most draws stop
there; a bounded number of accepted ones train one epoch on real MNIST, in process.
``--hypothesis-show-statistics`` counts the draws refused by Hydra, refused by hreg, accepted, trained.

Deterministic in CI (the ``ci`` profile of conftest.py); ``pytest tests/test_fuzz.py
--hypothesis-profile=long`` draws ten times as many, at random. A failure it finds becomes a plain
test in test_config.py.
"""

from __future__ import annotations

import copy
import functools
import math

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from hreg.config import validate, validate_launcher
from hreg.errors import UserError
from hreg.run import run
from hreg.search.callback import check_pruner
from hreg.search.space import check_space
from tests.conftest import CONF_DIR, compose_config

#: Group choices whose options bring keys of their own; each is composed once, its leaves fuzzed.
CONTEXTS = {
    "default": (),
    "sgd": ("optimizer=sgd", "augment=elastic_affine", "model/norm=batchnorm", "regularizer=l1"),
    "adamw": ("optimizer=adamw", "augment=noise_affine", "model/norm=layernorm", "regularizer=l2"),
    "lightning": ("engine=lightning", "monitor=none"),
    "stacked": ("hydra/launcher=stacked",),
    "local": ("hydra/launcher=submitit_local",),
    "slurm": ("hydra/launcher=submitit_slurm",),
}
#: Contexts whose launcher is one of hreg's: its hydra.launcher.* settings are fuzzed too.
LAUNCHERS = ("stacked", "local", "slurm")

#: What a user might type for any key: wrong types, out of range, huge, tiny, non-finite, empty, edges.
TYPED = (
    "null", "''", "abc", "true", "false", "0", "1", "-1", "2", "3", "10", "300", "3000", "60000",
    "2147483648", "4294967296", "99999999999999999999", "-99999999999999999999", "1e308", "-1e308",
    "1e-308", "-0.0", "0.0", "0.5", "0.999999", "1.0", "1.5", "180.0", "nan", "inf", "-inf",
    "[]", "[0]", "[1]", "[1,2]", "[0.5,2.0]", "[-1,1]", "[2,1]", "[100,100,100]", "{}", "{a:1}",
    "auto", "cpu", "cuda", "val_acc", "val_loss", "l1", "none",
)
VALUES = st.one_of(
    st.sampled_from(TYPED),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),  # torch flushes subnormals
    st.text(alphabet="ab1.-_ ", max_size=4).map(lambda s: f"'{s}'"),
)

#: Leaves that are the wiring of a group (its class), not one of its settings.
WIRING = ("_target_", "_partial_")

_parser = OverridesParser.create()


@functools.cache
def composed(context: str) -> DictConfig:
    return compose_config(*CONTEXTS[context], hydra=True)


def _leaves(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


@functools.cache
def leaves(context: str) -> list[str]:
    cfg = OmegaConf.to_container(composed(context), resolve=False)
    launcher = {"hydra": {"launcher": cfg["hydra"]["launcher"]}} if context in LAUNCHERS else {}
    del cfg["hydra"]
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}  # `monitor=x` picks an option of a group
    keys = [k for k in _leaves({**cfg, **launcher}) if k.rsplit(".", 1)[-1] not in WIRING and k not in groups]
    return [k for k in keys if not k.startswith("search.space.") or k.count(".") == 3]  # one entry's fields


def with_override(context: str, key: str, value: str) -> DictConfig | None:
    """The config of `train.py ... KEY=VALUE`, or None where Hydra itself refuses the override."""
    cfg = copy.deepcopy(composed(context))
    try:
        (override,) = _parser.parse_overrides([f"{key}={value}"])
        if override.is_sweep_override():
            return None  # Hydra: ambiguous value for a single run
        with open_dict(cfg.hydra):
            OmegaConf.update(cfg, key, override.value(), merge=True)
    except (HydraException, OmegaConfBaseException):
        return None
    return cfg


def check(cfg: DictConfig) -> None:
    """What the entry points check before building: train.py's task, the stacked launcher, the search."""
    validate(cfg)
    validate_launcher(cfg.hydra)
    check_space(cfg.search.space)
    check_pruner(cfg)


def assert_one_line_naming(key: str, error: UserError) -> None:
    """The line names the key, or (a rule between two keys of one node, e.g. low <= high) its node and name."""
    message = str(error)
    parent, _, name = key.rpartition(".")
    assert "\n" not in message and (key in message or (parent in message and name in message)), (key, message)


def refused_or_accepted(key: str, cfg: DictConfig) -> bool:
    """True when the checks accept ``cfg``; a refusal must be one line that names ``key``."""
    try:
        check(cfg)
    except UserError as error:
        assert_one_line_naming(key, error)
        return False
    return True


@st.composite
def draws(draw: st.DrawFn) -> tuple[str, str, str]:
    context = draw(st.sampled_from(list(CONTEXTS)))
    return context, draw(st.sampled_from(leaves(context))), draw(VALUES)


def test_the_fuzzer_reaches_every_group_and_setting():
    keys = {key for context in CONTEXTS for key in leaves(context)}
    for expected in ("seed", "threads", "epochs", "checkpoint.every", "early_stopping.patience", "data.batch_size",
                     "model.hidden", "model.norm.eps", "optimizer.momentum", "regularizer.lam",
                     "augment.elastic_sigma", "monitor.histograms", "engine.trainer.devices", "device.name",
                     "hydra.launcher.max_members", "hydra.launcher.timeout_min", "hydra.launcher.partition",
                     "search.pruner.n_warmup_steps", "search.space.lr.low"):
        assert expected in keys, expected


@given(draws())
def test_any_value_of_any_key_is_refused_in_one_line_or_accepted(drawn):
    context, key, value = drawn
    cfg = with_override(context, key, value)
    if cfg is None:
        event("refused by Hydra")
        return
    event("accepted" if refused_or_accepted(key, cfg) else "refused by hreg")


#: One-epoch runs per test run: a hundredth of the validated draws (10 in CI).
TRAINED = max(1, settings.default.max_examples // 100)


@settings(max_examples=TRAINED)
@given(drawn=draws())
def test_an_accepted_value_builds_and_trains_one_epoch(drawn, tmp_path_factory):
    context, key, value = drawn
    assume(not key.startswith(("search.", "hydra.")))  # a sweep's settings: they do not change one run
    cfg = with_override(context, key, value)
    assume(cfg is not None and refused_or_accepted(key, cfg))
    assume(key != "epochs" or cfg.epochs <= 2)
    with open_dict(cfg):
        if key != "epochs":
            cfg.epochs = 1
        del cfg.hydra
    run_dir = tmp_path_factory.mktemp("fuzz")
    try:
        objective = run(cfg, run_dir)
    except UserError as error:  # found only once built (a Lightning setting, a device): still one line
        assert_one_line_naming(key, error)
        event("refused once built")
        return
    event("trained")
    assert isinstance(objective, float) and (math.isfinite(objective) or math.isnan(objective))



def test_null_for_any_setting_of_a_run_is_refused_in_one_line_or_trains_one_epoch(tmp_path):
    """`KEY=null` for every key of every context, not a draw: null passes the type checks of Hydra's
    structured configs, so only hreg's rules keep it from reaching a constructor (it once did for eps, lam,
    momentum, weight_decay and every augmentation setting)."""
    trained = 0
    for context in ("default", "sgd", "adamw"):
        for key in leaves(context):
            if key.startswith(("search.", "hydra.")):
                continue
            cfg = with_override(context, key, "null")
            if cfg is None or not refused_or_accepted(key, cfg):
                continue
            with open_dict(cfg):
                cfg.epochs, cfg.data.train_fraction, cfg.monitor = 1, 0.01, None
                del cfg.hydra
            objective = run(cfg, tmp_path / f"{context}-{key}")
            assert math.isfinite(objective), (context, key)
            trained += 1
    assert trained >= 3, "null where null means something (model.norm, monitor, early_stopping.patience) trains"
