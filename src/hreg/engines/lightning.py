"""The Lightning engine (``engine=lightning``): a run trained by Lightning's Trainer.

Nothing is built twice: ``build.build_context`` makes the model, penalty,
augmentation, optimizer and splits exactly as for the native loop, and this
module hands them to Lightning:

- ``MNISTDataModule`` serves the run's splits (3000/57000/10000, already
  normalised on the device) as DataLoaders: the training split shuffled in
  batches, the three splits whole for evaluation.
- ``RegularizedClassifier`` (a LightningModule) trains on cross-entropy plus the
  weight penalty over (augmented) batches, evaluates whole splits in eval mode,
  and returns the optimizer of the ``optimizer`` group.
- The Trainer brings the loop, its progress bar, ModelCheckpoint
  (``checkpoints/last.ckpt``, and ``checkpoints/best.ckpt`` on the objective)
  and EarlyStopping.
- ``LifecycleCallback`` (a Callback) drives the run's ``lifecycle.Lifecycle``
  where the native loop does: hreg's record and hooks at each epoch's end
  (TensorBoard's event files with the native run's tags, written by hreg's own
  monitor; an Optuna trial hears every evaluation and prunes), and a diverged
  loss or Ctrl-C stops the Trainer cleanly. The run ends through the same
  ``Lifecycle.end`` as a native run, with the same status and exit code.

Evaluation: Lightning validates every ``eval_every`` epochs
(``check_val_every_n_epoch``); the first and the last epoch, which the native
loop also evaluates, are evaluated by the same module code when Lightning
skips them, so the result file has the same evaluations as a native run's.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from hydra.types import RunMode

from hreg.checkpoint import CheckpointHook, checkpoint_dir
from hreg.data import Split, Splits
from hreg.early_stopping import EarlyStopping as NativeEarlyStopping
from hreg.errors import UserError
from hreg.hooks import EpochStats, Hook, RunContext
from hreg.lifecycle import Lifecycle, ending
from hreg.metrics import SPLITS, eval_chunk
from hreg.result import Status
from hreg.rundir import is_worker_process
from hreg.schedule import batch_bounds, is_eval_epoch, lr_factor, set_lr
from hreg.stops import EarlyStopped, Interrupted, StopRequest, StopRun, deferred_signals

# Lightning 2.6 asks torch 2.14's pytree in a deprecated way at every fit: not the user's business.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)

#: hreg hooks whose work Lightning's own callbacks do here (ModelCheckpoint, EarlyStopping).
REPLACED_BY_LIGHTNING = (CheckpointHook, NativeEarlyStopping)


class SplitBatches(Dataset):
    """A split whose items are whole batches: indexed by a list of positions, one gather a batch.

    Served with a ``BatchSampler`` and ``batch_size=None``, it spares the DataLoader's per-image
    ``__getitem__`` and ``collate`` (300 calls and a stack a training batch, 70000 an evaluation).
    """

    def __init__(self, split: Split) -> None:
        self.x, self.y = split.x, split.y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(index, device=self.y.device)
        return self.x.index_select(0, rows), self.y.index_select(0, rows)  # as the native loop's batches


class EpochBatches(BatchSampler):
    """A BatchSampler that passes Lightning's ``set_epoch`` on to its sampler (a DistributedSampler
    reshuffles by epoch)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def batches(data: SplitBatches, order: Sampler, batch_size: int, drop_last: bool = False) -> DataLoader:
    return DataLoader(data, sampler=EpochBatches(order, batch_size, drop_last), batch_size=None)


class MNISTDataModule(L.LightningDataModule):
    """The run's splits as DataLoaders (the tensors already sit on the run's device: no workers)."""

    def __init__(self, splits: Splits, batch_size: int, seed: int) -> None:
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        """The training split shuffled every epoch; with several processes, each takes its own share
        (a DistributedSampler seeded with the run's seed), so a step trains ``devices`` batches."""
        data = SplitBatches(self.splits.train)
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:
            order: Sampler = DistributedSampler(data, num_replicas=world, rank=self.trainer.global_rank,
                                                shuffle=True, seed=self.seed)
        else:
            order = RandomSampler(data)
        # As the native loop: a last batch of a single image is dropped (BatchNorm cannot train on it).
        n = len(order)
        drop_last = len(batch_bounds(n, self.batch_size)) * self.batch_size < n
        return batches(data, order, self.batch_size, drop_last)

    def val_dataloader(self) -> list[DataLoader]:
        """Train, val and test, whole, in that order (``SPLITS``); every process evaluates all of them."""
        return [self._whole(getattr(self.splits, name)) for name in SPLITS]

    @staticmethod
    def _whole(split: Split) -> DataLoader:
        data = SplitBatches(split)
        return batches(data, SequentialSampler(data), eval_chunk(split.x.device))


class RegularizedClassifier(L.LightningModule):
    """The run's model trained on cross-entropy + its weight penalty, on (augmented) batches."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__()
        self.model = ctx.model
        self.penalty = ctx.penalty
        self.augment = ctx.augment
        self.hreg_optimizer = ctx.optimizer
        self.lr_schedule, self.epochs = ctx.cfg.lr_schedule, ctx.cfg.epochs
        self.register_buffer("train_sums", torch.zeros(3), persistent=False)  # data loss, penalty, batches
        self.register_buffer("eval_sums", torch.zeros(len(SPLITS), 3), persistent=False)  # loss, correct, count
        self.evaluated: dict[str, float] | None = None  # the metrics of this epoch's evaluation, if any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.hreg_optimizer

    # --- training ----------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        set_lr(self.hreg_optimizer, lr_factor(self.lr_schedule, self.current_epoch + 1, self.epochs))
        self.train_sums.zero_()
        self.evaluated = None

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.augment is not None:
            x = self.augment(x)
        data_loss = F.cross_entropy(self.model(x), y)
        penalty = self.penalty(self.model)
        self.train_sums += torch.stack([data_loss.detach(), penalty.detach(), torch.ones_like(data_loss)])
        loss = data_loss + penalty
        self.log("train_loss", loss, prog_bar=True, logger=False, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def epoch_stats(self) -> EpochStats:
        data_loss, penalty, batches = self.train_sums.tolist()
        return EpochStats(data_loss / batches, penalty / batches)

    # --- evaluation on whole splits ----------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.eval_sums.zero_()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        logits = self.model(x)
        self.eval_sums[dataloader_idx] += torch.stack([
            F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(dim=1) == y).sum(), logits.new_tensor(len(y))
        ])

    def on_validation_epoch_end(self) -> None:
        self.evaluated = self._metrics()
        # For the progress bar, ModelCheckpoint and EarlyStopping; TensorBoard gets them from hreg's monitor.
        self.log_dict({k: self.evaluated[k] for k in ("val_acc", "val_loss")}, prog_bar=True, logger=False,
                      sync_dist=True)

    def _metrics(self) -> dict[str, float]:
        metrics = {}
        for name, (loss, correct, count) in zip(SPLITS, self.eval_sums.tolist()):
            metrics[f"{name}_loss"] = loss / count if count else math.nan
            metrics[f"{name}_acc"] = correct / count if count else math.nan
        return metrics

    @torch.no_grad()
    def evaluate_now(self, data: MNISTDataModule) -> dict[str, float]:
        """The validation code outside Lightning's validation loop (an epoch it does not validate)."""
        was_training = self.training
        self.eval()
        self.on_validation_epoch_start()
        for index, loader in enumerate(data.val_dataloader()):
            for batch in loader:
                self.validation_step(batch, 0, index)
        self.train(was_training)
        return self._metrics()


class LifecycleCallback(Callback):
    """The run's lifecycle at the end of each Lightning epoch: the record, hreg's hooks, stop requests.

    With several processes, the first one (global rank 0) keeps the record and runs the hooks; its
    decision to stop (diverged, pruned, a signal) is broadcast, so that every process stops together.
    """

    def __init__(self, run: Lifecycle, data: MNISTDataModule) -> None:
        self.run, self.data = run, data
        self.stop: StopRun | None = None
        self.stop_request: StopRequest | None = None  # set by fit: Ctrl-C and SIGTERM, checked between epochs

    def on_train_start(self, trainer: L.Trainer, module: RegularizedClassifier) -> None:
        if trainer.is_global_zero:
            self.run.begin()

    def on_train_epoch_end(self, trainer: L.Trainer, module: RegularizedClassifier) -> None:
        cfg, epoch = self.run.ctx.cfg, trainer.current_epoch + 1
        if trainer.is_global_zero:
            metrics = module.evaluated
            if metrics is None and is_eval_epoch(epoch, cfg.epochs, cfg.eval_every):
                metrics = module.evaluate_now(self.data)
            try:
                self.run.end_epoch(epoch, module.epoch_stats(), metrics)
                self.run.judge(epoch)
                if self.stop_request is not None:
                    self.stop_request.check(epoch)
            except StopRun as stop:
                self.stop = stop
        stopping = self.stop is not None
        # ModelCheckpoint saves at Lightning's own validations only (every eval_every epochs): the epoch a run
        # ends at is saved here, where the native loop's last.pt would be (not after a divergence).
        keep_last = (stopping or epoch == cfg.epochs) and ending(self.stop).status.clean_end
        if trainer.world_size > 1:
            stopping, keep_last = trainer.strategy.broadcast((stopping, keep_last), src=0)
        trainer.should_stop = trainer.should_stop or stopping
        if keep_last:  # every process calls it: the strategy writes once
            last = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION
            trainer.save_checkpoint(checkpoint_dir(self.run.ctx.run_dir) / last)


def build_trainer(ctx: RunContext, callback: LifecycleCallback) -> tuple[L.Trainer, EarlyStopping | None]:
    """A Trainer for the run: the ``engine.trainer`` settings, with the schedule, device and callbacks
    the rest of the config asks for. No Lightning logger: hreg's monitor writes the event files."""
    cfg = ctx.cfg
    mode = "max" if cfg.objective.endswith("_acc") else "min"
    checkpoints = ModelCheckpoint(dirpath=checkpoint_dir(ctx.run_dir), filename="best", monitor=cfg.objective,
                                  mode=mode, save_last=True, save_top_k=1, auto_insert_metric_name=False,
                                  enable_version_counter=False)
    callbacks: list[Callback] = [callback, checkpoints]
    stopping = None
    if cfg.early_stopping.patience:
        stopping = EarlyStopping(monitor=cfg.objective, mode=mode, patience=cfg.early_stopping.patience)
        callbacks.append(stopping)
    settings = dict(cfg.engine.trainer)
    settings.setdefault("accelerator", "gpu" if ctx.device.type == "cuda" else ctx.device.type)
    settings.setdefault("log_every_n_steps", 1)  # only the progress bar reads per-step values
    try:
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            check_val_every_n_epoch=cfg.eval_every,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # MNISTDataModule shares the training split out itself
            logger=False,
            callbacks=callbacks,
            **settings,
        )
    except (TypeError, ValueError, MisconfigurationException) as error:  # a setting Lightning refuses
        raise UserError(f"engine.trainer: {error}") from None
    return trainer, stopping


def fit(ctx: RunContext, hooks: Sequence[Hook], first_epoch: int = 1) -> Status:
    """Train ``ctx`` with Lightning, inside the same ``Lifecycle`` as ``engines.native.fit``."""
    # Lightning's lines once, formatted like every other line of the run (its own handlers would repeat them).
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
    if first_epoch != 1:
        raise UserError("engine=lightning: hreg-resume continues native runs only "
                        "(a Lightning run's checkpoints/last.ckpt resumes in Lightning itself)")
    torch.manual_seed(ctx.cfg.seed)  # batch order, dropout and augmentation draws, as in the native loop
    ctx.result.set_extra("engine", "lightning")
    # A worker process of a distributed run trains and stops with the others; the first keeps the record.
    hooks = [] if is_worker_process() else [hook for hook in hooks if not isinstance(hook, REPLACED_BY_LIGHTNING)]
    data = MNISTDataModule(ctx.data, ctx.cfg.data.batch_size, ctx.cfg.seed)
    run = Lifecycle(ctx, hooks)
    callback = LifecycleCallback(run, data)
    trainer, stopping = build_trainer(ctx, callback)
    if trainer.world_size > 1 and ctx.hydra is not None and ctx.hydra.mode == RunMode.MULTIRUN:
        raise UserError(f"engine.trainer asks for {trainer.world_size} processes a run: Lightning starts them by "
                        "running the command again, which a multirun (-m) cannot; run such a job on its own")
    failure: BaseException | None = None
    try:
        with deferred_signals() as stop_request:
            callback.stop_request = stop_request
            trainer.fit(RegularizedClassifier(ctx), datamodule=data)
        failure = callback.stop
        if failure is None and stopping is not None and stopping.stopped_epoch:
            failure = EarlyStopped(f"no better {ctx.cfg.objective} in {stopping.patience} evaluations")
        elif failure is None and trainer.interrupted:  # Lightning caught a second signal mid-epoch
            failure = KeyboardInterrupt()
    except BaseException as error:
        failure = error
        raise
    finally:
        if is_worker_process():
            end = ending(failure)
            ctx.result.finish(end.status, end.error)
        else:
            run.end(failure)
    if isinstance(failure, Interrupted):
        raise failure  # the entry point exits 128 + the signal, as for a native run
    return ctx.result.status
