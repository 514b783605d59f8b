"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model, the optimizer, the random-number states, the
epoch and the result so far, at an epoch boundary. Files are written to a
temporary name and renamed (a crash never leaves half a checkpoint under the
real name) and carry a SHA-256 of their payload, so that a truncated or
corrupted file is refused with a clear message instead of being loaded.
Only two are kept, in ``RUN_DIR/checkpoints/``: ``last.pt`` and ``best.pt``
(best validation objective so far; see ``CheckpointHook`` for when each is written).
"""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from hreg.atomic import write_atomic
from hreg.errors import UserError
from hreg.hooks import EpochStats, Hook, RunContext
from hreg.result import RunResult

MAGIC = b"HREG-CKPT-1\n"
#: How a torch optimizer steps (its kernels), not what it has learned: a checkpoint's values are those of
#: the machine that wrote it (a graphed run on a GPU steps capturable, not fused); a resumed run steps as
#: its config and its own machine say (torch's load_state_dict would take the checkpoint's).
KERNEL_FLAGS = ("fused", "foreach", "capturable")
DIGEST_SIZE = 32
LAST, BEST = "last.pt", "best.pt"


class CheckpointError(UserError):
    """A checkpoint is missing, partial or corrupted."""


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically, with a digest of its bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, MAGIC + hashlib.sha256(payload).digest() + payload, durable=True)


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save`` onto ``device`` (any device: tensors are mapped)."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    header = len(MAGIC) + DIGEST_SIZE
    if not raw.startswith(MAGIC) or len(raw) < header:
        raise CheckpointError(f"{path} is not an hreg checkpoint (or is truncated); it was not loaded")
    digest, payload = raw[len(MAGIC) : header], raw[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is corrupted or partial (checksum mismatch); it was not loaded")
    return torch.load(io.BytesIO(payload), map_location=device, weights_only=False)


def rng_states(device: torch.device) -> dict[str, Any]:
    """The generators a run on ``device`` draws from: the CPU's, and its GPU's when it runs on one (a CPU
    run leaves CUDA untouched, and a checkpoint does not depend on how many GPUs the machine has)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda")
    if device.type == "cuda" and cuda is not None:
        if isinstance(cuda, list):  # written before 2026-11-28: every visible GPU's; the run used the first
            cuda = cuda[0]
        torch.cuda.set_rng_state(cuda.cpu(), device)


def capture(ctx: RunContext, epoch: int) -> dict[str, Any]:
    """The state of a run at the end of ``epoch`` (its result record included); its tensors are the run's
    own, so a state kept while the run trains on is ``copied``."""
    return {
        "epoch": epoch,
        "model": ctx.model.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "rng": rng_states(ctx.device),
        "result": ctx.result.to_dict(),
    }


def copied(value: Any) -> Any:
    """``value`` with its dicts, lists and tuples rebuilt and its tensors cloned: several times faster than
    ``copy.deepcopy`` (``benchmarks/bench_bookkeeping.py``). A state_dict stays an OrderedDict with its ``_metadata``
    (the modules' versions, which ``load_state_dict`` reads)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        out = type(value)((key, copied(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = copy.deepcopy(value._metadata)
        return out
    if type(value) in (list, tuple):
        return type(value)(copied(item) for item in value)
    return value


def load_model(model: torch.nn.Module, state: dict[str, Any], run_dir: Path) -> None:
    """The checkpoint's weights into ``model``; CheckpointError when they belong to another architecture."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"the checkpoint does not fit the model of {run_dir}/.hydra/config.yaml "
            f"({str(error).strip().splitlines()[-1].strip()}); was the config changed?"
        ) from None


def restore(ctx: RunContext, state: dict[str, Any]) -> int:
    """Put a run back in ``state`` (model, optimizer, random numbers, record); returns the first epoch to train."""
    load_model(ctx.model, state, ctx.run_dir)
    kernels = [{flag: group[flag] for flag in KERNEL_FLAGS if flag in group} for group in ctx.optimizer.param_groups]
    ctx.optimizer.load_state_dict(state["optimizer"])
    for group, flags in zip(ctx.optimizer.param_groups, kernels):
        group.update(flags)
    ctx.result = RunResult.from_dict(state["result"], "checkpoint")
    restore_rng_states(state["rng"], ctx.device)
    return state["epoch"] + 1


class CheckpointHook(Hook):
    """Saves ``last.pt`` every ``every`` epochs and at a clean end; ``best.pt`` holds the best objective so far.

    The state at each improvement is copied in memory (``copied``)
    and written as ``best.pt`` just before each ``last.pt`` and once at the end
    of the run, however it ends. Why: writing a state (pickle, checksum, fsync)
    costs far more than copying it, more from a GPU, and a run improves at many
    of its evaluations (a third of the default run's; nearly all of them early on),
    for each member of a stack. Written with ``last.pt``, ``best.pt`` is never
    behind the best up to the epoch of ``last.pt``: a process killed outright
    loses only epochs that resuming from ``last.pt`` trains again.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self._best: dict[str, Any] | None = None  # the state at the latest improvement, not yet written

    def _periodic(self, epoch: int) -> bool:
        return bool(self.every) and epoch % self.every == 0

    def needs_model(self, epoch: int, improved: bool) -> bool:
        return improved or self._periodic(epoch)

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        if not self.needs_model(epoch, improved):
            return
        state = capture(ctx, epoch)
        if improved:
            self._best = copied(state)  # the run trains on: its own tensors change
        if self._periodic(epoch):
            self._write_best(ctx)
            save(checkpoint_dir(ctx.run_dir) / LAST, state)

    def on_end(self, ctx: RunContext) -> None:
        self._write_best(ctx)  # a state of a finished epoch, whatever stopped the run after it
        if ctx.result.status.clean_end:
            save(checkpoint_dir(ctx.run_dir) / LAST, capture(ctx, ctx.result.epochs_completed))

    def _write_best(self, ctx: RunContext) -> None:
        if self._best is not None:
            save(checkpoint_dir(ctx.run_dir) / BEST, self._best)
            self._best = None
