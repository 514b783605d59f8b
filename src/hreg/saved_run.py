"""Commands on a run directory that already exists: resume it, or evaluate it.

- ``hreg-resume RUN_DIR``: continue an interrupted or killed run from its last
  checkpoint, with the configuration it was started with, in the same
  directory (its log, result file and TensorBoard curves continue).
- ``hreg-eval RUN_DIR [--checkpoint best|last]``: test-set (and validation)
  metrics of a saved model, without training; written to ``eval_<which>.json``.

``--device`` moves either to another device: checkpoints load on any device.
Damaged files (a truncated ``result.json``, a broken ``.hydra/config.yaml``) are
refused with one line and exit code 2, and nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hreg import checkpoint
from hreg.atomic import write_atomic
from hreg.build import build_context, build_model
from hreg.config import RUN_CONFIG_KEYS, validate
from hreg.device import NAMES as DEVICES
from hreg.cli import exit_on_error, freeze_at_exit
from hreg.errors import UserError
from hreg.metrics import evaluate_all
from hreg.progress import LOG_FORMAT
from hreg.result import RESULT_FILE, RunResult
from hreg.run import run
from hreg.rundir import RunDirLock

log = logging.getLogger("hreg")


class RunDirError(UserError):
    """The directory is not an hreg run directory, or its files are damaged."""


def load_run_config(run_dir: Path, device: str | None) -> DictConfig:
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    try:
        cfg = OmegaConf.load(config_file)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunDirError(f"{config_file} is damaged ({first_line})") from None
    missing = [key for key in RUN_CONFIG_KEYS if not isinstance(cfg, DictConfig) or key not in cfg]
    if missing:
        raise RunDirError(f"{config_file} is not a whole hreg run config (no {', '.join(missing)})")
    if "lr_schedule" not in cfg:  # saved before lr_schedule existed: such runs trained at a constant rate
        cfg.lr_schedule = "constant"
    if device:
        cfg.device.name = device
    return cfg


def _setup_logging(run_dir: Path) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=LOG_FORMAT,
        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(run_dir / "train.log", mode="a")],
    )


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("run_dir", type=Path, help="the run's directory (outputs/DATE/TIME or a multirun job folder)")
    parser.add_argument("--device", choices=DEVICES, help="override the run's device")
    return parser


def resume(run_dir: Path, device: str | None = None) -> str | None:
    """Continue the run in ``run_dir``; returns why not, when it has ended already."""
    cfg = load_run_config(run_dir, device)
    validate(cfg)
    with RunDirLock(run_dir):  # before anything is read for resuming: another process may be writing it
        if (run_dir / RESULT_FILE).exists():
            status = RunResult.load(run_dir).status
            if not status.resumable:
                return f"{run_dir} has ended ({status}); nothing to resume"
        # The checkpoint must load into the config's model before anything is written into the directory.
        state = checkpoint.load(checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST)
        checkpoint.load_model(build_model(cfg, torch.device("cpu")), state, run_dir)
        _setup_logging(run_dir)
        run(cfg, run_dir, resume=True)
    return None


def resume_main(argv: list[str] | None = None) -> int:
    args = _parser("hreg-resume", "Continue a run from its last checkpoint.").parse_args(argv)
    freeze_at_exit()
    with exit_on_error("hreg-resume"):
        ended = resume(args.run_dir, args.device)
        if ended:
            print(ended)
    return 0


def evaluate(run_dir: Path, which: str, device: str | None = None) -> dict[str, float]:
    """Validation and test metrics of a saved model, written to ``eval_<which>.json``."""
    cfg = load_run_config(run_dir, device)
    validate(cfg)
    ctx = build_context(cfg, run_dir)
    state = checkpoint.load(checkpoint.checkpoint_dir(run_dir) / f"{which}.pt", ctx.device)
    checkpoint.load_model(ctx.model, state, run_dir)
    metrics = {"checkpoint": which, "epoch": state["epoch"], **evaluate_all(ctx.model, ctx.data)}
    write_atomic(run_dir / f"eval_{which}.json", json.dumps(metrics, indent=2).encode())
    return metrics


def evaluate_main(argv: list[str] | None = None) -> int:
    parser = _parser("hreg-eval", "Evaluate a saved model on the validation and test sets.")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = parser.parse_args(argv)
    freeze_at_exit()
    with exit_on_error("hreg-eval"):
        metrics = evaluate(args.run_dir, args.checkpoint, args.device)
    print(
        f"{args.checkpoint} checkpoint (epoch {metrics['epoch']}): val acc {metrics['val_acc']:.4f} "
        f"loss {metrics['val_loss']:.4f} | test acc {metrics['test_acc']:.4f} loss {metrics['test_loss']:.4f}"
    )
    return 0

