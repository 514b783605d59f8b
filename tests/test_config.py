"""Every option of every config group composes and trains two epochs; every preset composes (lightning-hydra-template's
`experiment=glob(*)` test, with Hydra's compose API)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from hreg.config import validate
from hreg.errors import ConfigError
from hreg.run import train
from hreg.search.callback import check_pruner
from hreg.search.space import check_space
from hreg.search.study import SearchError
from tests.conftest import CONF_DIR, compose_config, one_error_line, run_train

PRESET_GROUPS = ("experiment", "variant", "debug")
#: Groups whose options are configurations of a run (the rest of conf/ is presets, hydra or search settings).
NOT_RUN = (*PRESET_GROUPS, "search")


def options(*, presets: bool) -> list:
    """``(group, option)`` of every option file in conf/, as pytest parameters named ``group=option``."""
    found = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        if path.parent == CONF_DIR:
            continue  # config.yaml, the primary config
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if (group in PRESET_GROUPS) == presets and (presets or group not in NOT_RUN):
            found.append(pytest.param(group, path.stem, id=f"{group}={path.stem}"))
    return found


def test_the_lists_cover_conf():
    groups = {param.values[0] for param in options(presets=False) + options(presets=True)}
    assert groups == {"data", "model", "model/norm", "regularizer", "augment", "optimizer", "device", "monitor",
                      "engine", "experiment", "variant", "debug"}


@pytest.mark.parametrize("group, option", options(presets=False))
def test_every_group_option_composes_and_trains(group, option, run_dir):
    cfg = compose_config(f"{group}={option}", "epochs=2")
    if group == "device" and option in ("cuda", "mps"):
        available = torch.cuda.is_available() if option == "cuda" else torch.backends.mps.is_available()
        if not available:
            with pytest.raises(ConfigError, match="device"):
                train(cfg, run_dir)
            return
    result = train(cfg, run_dir)
    assert result.status == "completed" and result.epochs_completed == 2
    first, second = result.history  # evaluated after each epoch: it learns
    assert second["val_loss"] < first["val_loss"] and second["val_acc"] > 0.15  # chance: 0.1


@pytest.mark.parametrize("group, option", options(presets=True))
def test_every_preset_composes_without_plus(group, option):
    cfg = compose_config(f"{group}={option}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.epochs >= 1 and cfg.model.hidden


def test_presets_are_off_by_default():
    cfg = compose_config(hydra=True)
    assert {group: cfg.hydra.runtime.choices.get(group) for group in PRESET_GROUPS} == dict.fromkeys(PRESET_GROUPS)


# --- failures the fuzzer (test_fuzz.py) found, kept as plain tests ------------------------------------------------


@pytest.mark.parametrize("override, line", [
    ("seed=99999999999999999999", "seed=99999999999999999999: must be an integer in [0, 4294967295]"),
    ("data.seed=-1", "data.seed=-1: must be an integer in [0, 4294967295]"),
    ("threads=99999999999999999999", "threads=99999999999999999999: must be auto or an integer in [1, 4096]"),
    ("model.norm=[]", "model.norm=[]: must be null or a normalisation layer (model/norm=batchnorm or layernorm)"),
    ("model.in_features=783", "model.in_features=783: must be 784 (MNIST's 28 x 28 pixels)"),
    ("optimizer.fused=maybe", "optimizer.fused='maybe': must be true or false"),
    ("monitor.histograms=null", "monitor.histograms=None: must be an integer >= 2 (the first and the last epoch)"),
    ("lr_schedule=linear", "lr_schedule='linear': must be one of constant, cosine"),
])
def test_values_that_once_reached_a_traceback_are_one_line(override, line):
    with pytest.raises(ConfigError) as refused:
        validate(compose_config(override))
    assert str(refused.value) == line


def test_a_pruner_setting_it_refuses_is_named():
    with pytest.raises(SearchError, match=r"^search\.stacked_pruner\.min_resource=None: cannot be built"):
        check_pruner(compose_config("hydra/launcher=stacked", "search.stacked_pruner.min_resource=null", hydra=True))


def test_a_range_between_two_keys_names_both():
    with pytest.raises(SearchError, match=r"^search\.space\.lam\.low=1e-06: must be <= high \(0\)$"):
        check_space(compose_config("search.space.lam.high=0").search.space)


@pytest.mark.parametrize("launcher, setting, line", [
    ("stacked", "max_members=0", "hydra.launcher.max_members=0: must be null or an integer >= 1"),
    ("submitit_local", "timeout_min=0", "hydra.launcher.timeout_min=0: must be an integer >= 1"),
])
def test_a_launcher_setting_that_cannot_work_is_one_line(launcher, setting, line, tmp_path):
    proc = run_train("-m", f"hydra/launcher={launcher}", f"hydra.launcher.{setting}", "debug=quick", "seed=0,1",
                     cwd=tmp_path)
    assert one_error_line(proc) == line
    assert not list(tmp_path.rglob("result.json"))


def test_a_monitor_that_is_not_one_is_one_line():
    cfg = compose_config("monitor=none")
    cfg.monitor = "abc"  # what a Python caller of hreg.run could pass; on the command line, a group's option
    with pytest.raises(ConfigError, match=r"^monitor='abc': must be null or a monitor"):
        validate(cfg)
