"""Commands on a run directory that already exists: resume it, or evaluate it.

- ``hreg-resume RUN_DIR``: continue an interrupted or killed run from its last
  checkpoint, with the configuration it was started with, in the same
  directory (its log, result file and TensorBoard curves continue).
- ``hreg-eval RUN_DIR [--checkpoint best|last]``: test-set (and validation)
  metrics of a saved model, without training; written to ``eval_<which>.json``.

``--device`` moves either to another device: checkpoints load on any device.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hreg import checkpoint
from hreg.checkpoint import CheckpointError
from hreg.config import ConfigError, validate
from hreg.loop import evaluate_all
from hreg.mnist import DataError
from hreg.run import RESULT_FILE, build_context, run, write_json

log = logging.getLogger("hreg")

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's, so one log reads as one

#: Statuses of a run that has ended for good: resuming would train past its end (or diverge again).
#: Still resumable: running (killed), interrupted, aborted, failed.
ENDED = ("completed", "early_stopped", "pruned", "diverged")


class RunDirError(ValueError):
    """The directory is not an hreg run directory."""


def load_run_config(run_dir: Path, device: str | None) -> DictConfig:
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    cfg = OmegaConf.load(config_file)
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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="override the run's device")
    return parser


def _fail(prog: str, error: Exception) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def resume_main(argv: list[str] | None = None) -> int:
    args = _parser("hreg-resume", "Continue a run from its last checkpoint.").parse_args(argv)
    try:
        cfg = load_run_config(args.run_dir, args.device)
    except RunDirError as error:
        return _fail("hreg-resume", error)
    result_file = args.run_dir / RESULT_FILE
    status = json.loads(result_file.read_text()).get("status") if result_file.is_file() else None
    if status in ENDED:
        print(f"{args.run_dir} has ended ({status}); nothing to resume")
        return 0
    _setup_logging(args.run_dir)
    try:
        run(cfg, args.run_dir, resume=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def evaluate_main(argv: list[str] | None = None) -> int:
    parser = _parser("hreg-eval", "Evaluate a saved model on the validation and test sets.")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    args = parser.parse_args(argv)
    try:
        cfg = load_run_config(args.run_dir, args.device)
        validate(cfg)
        ctx = build_context(cfg, args.run_dir)
        state = checkpoint.load(checkpoint.checkpoint_dir(args.run_dir) / f"{args.checkpoint}.pt", ctx.device)
    except (RunDirError, ConfigError, DataError, CheckpointError) as error:
        return _fail("hreg-eval", error)
    ctx.model.load_state_dict(state["model"])
    metrics = {"checkpoint": args.checkpoint, "epoch": state["epoch"], **evaluate_all(ctx.model, ctx.data)}
    write_json(args.run_dir / f"eval_{args.checkpoint}.json", metrics)
    print(
        f"{args.checkpoint} checkpoint (epoch {metrics['epoch']}): val acc {metrics['val_acc']:.4f} "
        f"loss {metrics['val_loss']:.4f} | test acc {metrics['test_acc']:.4f} loss {metrics['test_loss']:.4f}"
    )
    return 0
