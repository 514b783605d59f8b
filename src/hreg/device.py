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
    if name == "cpu":
        flush_denormals()
    return torch.device(name)


def flush_denormals() -> None:
    """Compute numbers below float32's smallest normal (1.2e-38) as zero on the CPU.

    Adam's moment estimates of a dead ReLU unit decay geometrically, and so do
    weights under an L2 penalty; after 200 epochs of the study thousands of them
    are denormal (counted in its checkpoints), and x86 arithmetic on denormals is
    many times slower than on normal numbers. Flushing them is what GPUs do by
    default; what it changes is below any precision training sees.
    """
    torch.set_flush_denormal(True)
