"""Every option of every config group composes and trains two epochs; every preset composes (lightning-hydra-template's
`experiment=glob(*)` test, with Hydra's compose API)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from hreg.errors import ConfigError
from hreg.run import train
from tests.conftest import CONF_DIR, compose_config

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
