"""Train one configuration: `python train.py [group=option] [key=value] ...` (see README)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hreg.cli import exit_on_error, freeze_at_exit
from hreg.run import run

#: Preset groups listed (as null) in conf/config.yaml's defaults: chosen with `experiment=...`.
PRESETS = ("experiment", "variant", "debug")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    with exit_on_error("hreg"):
        return run(cfg, Path(hydra_cfg.runtime.output_dir), hydra=hydra_cfg)


def accept_appended_presets(argv: list[str]) -> list[str]:
    """`+experiment=x` (the form from before the presets were in the defaults list) means `experiment=x`;
    Hydra itself would refuse to append a group that the defaults list already has."""
    return [arg[1:] if arg.startswith(tuple(f"+{group}=" for group in PRESETS)) else arg for arg in argv]


if __name__ == "__main__":
    sys.argv = accept_appended_presets(sys.argv)
    freeze_at_exit()
    main()
