"""The `monitor` config group: the TensorBoard hook, which writes a run's event files into its directory.

Only runs with ``monitor=tensorboard`` import this module (and TensorBoard).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from hreg.hooks import EpochStats, Hook, RunContext
from hreg.metrics import MAX_ENTROPY, prediction_entropy, probe_set
from hreg.schedule import is_eval_epoch


def histogram(values: torch.Tensor, edges: torch.Tensor, on_host: bool | None = None) -> dict[str, Any]:
    """TensorBoard's histogram of ``values`` over ``edges`` (its 'tensorflow' buckets, float64, on the
    values' GPU or else the CPU), as ``add_histogram_raw`` takes it: the same as ``add_histogram``'s (tested).

    Counted by ``np.histogram`` on the host (``on_host``, the default for values on a CPU), or by torch
    where the values are: on a GPU, counting there and copying back 1,500 counts beats copying and
    sorting 235,000 input gradients on the host. On the host this is ``add_histogram``'s own count,
    less the array it makes of TensorBoard's list of 1,500 edges at every call and its other fixed
    costs.
    """
    v = values.detach().reshape(-1)
    num, limits = v.numel(), edges.cpu().numpy()
    if on_host is None:
        on_host = not v.is_cuda
    if on_host:  # copied before the cast: Apple's MPS has no float64
        v = v.cpu().to(torch.float64).numpy()
        counts = np.histogram(v, limits)[0]
        low, high, total, squares = float(v.min()), float(v.max()), float(v.sum()), float(v.dot(v))
    else:
        v = v.to(torch.float64)
        bins = len(edges) - 1
        index = torch.bucketize(v, edges, right=True) - 1  # np.histogram's [e_i, e_i+1), the last bin closed
        index = torch.where(v == edges[-1], bins - 1, index)
        counts = torch.bincount(index[(index >= 0) & (index < bins)], minlength=bins).cpu().numpy()
        low, high, total, squares = torch.stack([v.min(), v.max(), v.sum(), v.dot(v)]).tolist()
    # The support of the histogram, and one empty bucket left of it (TensorBoard keeps right limits only).
    filled = np.flatnonzero(counts)
    if not len(filled):
        raise ValueError("no value within the histogram's buckets")  # as TensorBoard's make_histogram
    start, end = int(filled[0]), int(filled[-1]) + 1
    counts = counts[start - 1 : end] if start > 0 else np.concatenate([[0], counts[:end]])
    return {
        "min": low, "max": high, "num": num, "sum": total, "sum_squares": squares,
        "bucket_limits": limits[start : end + 1].tolist(), "bucket_counts": counts.tolist(),
    }


def snapshot_epochs(epochs: int, count: int, eval_every: int = 1) -> set[int]:
    """At most ``count`` of the evaluation epochs, spread evenly, always the first and the last: a
    snapshot's histograms sit at the steps of the scalars, and an engine may measure its entropies in
    the evaluation's own pass (the stacked engine does)."""
    evaluated = [e for e in range(1, epochs + 1) if is_eval_epoch(e, epochs, eval_every)]
    count = min(count, len(evaluated))  # monitor.histograms=10**9: every evaluation, in as many steps
    if count <= 1:
        return {epochs}
    return {evaluated[round(i * (len(evaluated) - 1) / (count - 1))] for i in range(count)}


class TensorBoardMonitor(Hook):
    """Writes a run's scalars, histograms and hyperparameters into its run directory.

    Tags, grouped by kind: ``loss/*``, ``accuracy/*``, ``optim/lr``,
    ``weights/fcK``, ``input_grad/fcK``, ``entropy/*``, and the HParams table.
    Histograms are taken at ``histograms`` epochs at most (first and last
    included); scalars at every evaluation.
    """

    def __init__(self, histograms: int = 20, hparams: bool = True) -> None:
        self.histograms = histograms
        self.hparams = hparams
        self.writer: SummaryWriter | None = None
        self.snapshots: set[int] = set()

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        # purge_step: after a resume, TensorBoard drops what an earlier process logged from here on.
        self.writer = SummaryWriter(log_dir=str(ctx.run_dir), purge_step=first_epoch if first_epoch > 1 else None)
        # On a GPU, where the histograms are counted; elsewhere on the CPU (Apple's MPS has no float64).
        self.edges = torch.tensor(self.writer.default_bins, dtype=torch.float64,
                                  device=ctx.device if ctx.device.type == "cuda" else "cpu")
        self.snapshots = snapshot_epochs(ctx.cfg.epochs, self.histograms, ctx.cfg.eval_every)
        self.probe = probe_set(ctx.data)
        if first_epoch == 1:
            self._log_random_model(ctx)

    def _log_random_model(self, ctx: RunContext) -> None:
        """Entropy of an untrained model of the same architecture: the starting point to compare with."""
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            torch.manual_seed(ctx.cfg.seed + 1)
            random_model = instantiate(ctx.cfg.model).to(ctx.device)
        entropy = prediction_entropy(random_model, self.probe.x)
        ctx.result.set_extra("random_model_entropy", entropy.mean().item())
        self._histogram("entropy/random_model", entropy, 0)
        self.writer.add_scalar("entropy/random_model_mean", entropy.mean(), 0)
        self.writer.add_scalar("entropy/max_log10", MAX_ENTROPY, 0)

    def needs_model(self, epoch: int, improved: bool) -> bool:
        return epoch in self.snapshots

    def on_epoch_end(
        self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None, improved: bool
    ) -> None:
        w = self.writer
        if metrics is not None:
            for split in ("train", "val", "test"):
                w.add_scalar(f"loss/{split}", metrics[f"{split}_loss"], epoch)
                w.add_scalar(f"accuracy/{split}", metrics[f"{split}_acc"], epoch)
            w.add_scalar("loss/train_batches_data", stats.data_loss, epoch)
            w.add_scalar("loss/train_batches_penalty", stats.penalty, epoch)
            w.add_scalar("optim/lr", ctx.optimizer.param_groups[0]["lr"], epoch)
        if epoch in self.snapshots:
            self._snapshot(ctx, epoch)

    def _snapshot(self, ctx: RunContext, epoch: int) -> None:
        for name, layer in ctx.model.linear_layers().items():
            self._histogram(f"weights/{name}", layer.weight.detach(), epoch)
        probe = ctx.probe()
        for name, grad in probe.input_grads.items():
            self._histogram(f"input_grad/{name}", grad, epoch)
        self._histogram("entropy/model", probe.entropy, epoch)
        self.writer.add_scalar("entropy/model_mean", probe.entropy.mean(), epoch)

    def _histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.writer.add_histogram_raw(tag, **histogram(values, self.edges), global_step=step)

    def on_end(self, ctx: RunContext) -> None:
        if self.writer is None:
            return
        # Once per run: an interrupted run writes its table when the resumed one ends.
        result = ctx.result
        if self.hparams and result.final and result.status.is_over:
            final = result.final
            metrics = {f"hparams/{k}": final[k] for k in ("val_acc", "val_loss", "test_acc", "test_loss", "train_acc")}
            self.writer.add_hparams(hparams_of(ctx.cfg), metrics, run_name=".")
        self.writer.close()


def hparams_of(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The run's choices as flat scalars, for TensorBoard's HParams table."""
    norm = cfg.model.get("norm")
    return {
        "regularizer": cfg.regularizer.kind,
        "lam": float(cfg.regularizer.lam),
        "dropout": float(cfg.model.dropout),
        "norm": "none" if norm is None else norm._target_.rsplit(".", 1)[-1],
        "augment": _describe(cfg.augment),
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "lr": float(cfg.optimizer.lr),
        "epochs": int(cfg.epochs),
        "train_fraction": float(cfg.data.train_fraction),
        "seed": int(cfg.seed),
    }


def _describe(group: DictConfig) -> str:
    """``key=value,...`` of a group's settings (``_target_`` left out), or ``none``."""
    items = [f"{k}={v}" for k, v in group.items() if not k.startswith("_")]
    return ",".join(items) or "none"
