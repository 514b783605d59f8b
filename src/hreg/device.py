"""The `device` config group: where tensors live and the model runs."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from hreg.errors import ConfigError

#: What ``device.name`` may be.
NAMES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def build_device(cfg: DictConfig) -> torch.device:
    """Resolve ``device.name``: auto prefers cuda, then mps, then cpu.

    Asking for an accelerator that is not there is a user error, reported
    before any data is loaded.
    """
    name = cfg.name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda", "no CUDA GPU is visible here; use device=cpu or device=auto")
    if name == "mps" and not _mps_available():
        raise ConfigError("device", "mps", "no Apple MPS device is available here; use device=cpu or device=auto")
    return torch.device(name)
