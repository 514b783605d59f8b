"""The native engine: the epoch loop of one run, and the bookkeeping every engine shares.

Read ``fit`` top to bottom like nanoGPT's loop: an epoch is a random
permutation of the training split sliced into batches; each batch is
(optionally) augmented, goes forward in train mode, and its loss (cross-entropy
+ weight penalty) goes backward. On evaluation epochs (the first, the last and
every ``eval_every``) the three splits are evaluated in eval mode and recorded.
Then the hooks see the epoch; a hook, a blown-up loss or a signal may end the
run early, always at an epoch boundary. No DataLoader: the data already sits
on the device.

``begin_run``, ``end_epoch`` and ``end_run`` are the bookkeeping that any
engine does for each of its runs (the stacked launcher calls them once per
member), so every run's record and hooks behave the same whatever trained it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hreg.augment import Augment
from hreg.data import Split
from hreg.graph import EpochGraph, make_capturable, optimizer_state, why_not_graphed
from hreg.hooks import EpochStats, Hook, RunContext, StopRun
from hreg.metrics import MAX_ENTROPY, evaluate_all, weight_stats
from hreg.progress import Progress
from hreg.regularizer import WeightPenalty
from hreg.result import Status
from hreg.stopping import deferred_interrupts
from hreg.threads import one_thread

#: A run has diverged when its mean training cross-entropy over an epoch exceeds this (or is NaN or
#: infinite): a hundred times what a model at chance scores (ln 10 = 2.3 nats). Such a run sits at
#: chance accuracy with its weights blown up; no run that learns comes near it.
DIVERGED_LOSS = 100 * MAX_ENTROPY


class Diverged(StopRun):
    """The training loss blew up."""

    status = Status.DIVERGED


def divergence(stats: EpochStats) -> str | None:
    """Why an epoch's training loss counts as diverged, or None (see DIVERGED_LOSS)."""
    if not math.isfinite(stats.loss):
        return f"training loss is {stats.loss} (data {stats.data_loss}, penalty {stats.penalty})"
    if stats.data_loss > DIVERGED_LOSS:
        return f"training cross-entropy is {stats.data_loss:.4g}, above {DIVERGED_LOSS:.0f} (100 x ln 10): it blew up"
    return None


def is_eval_epoch(epoch: int, epochs: int, every: int) -> bool:
    """Evaluate at the first and last epoch and every ``every`` epochs (epochs count from 1)."""
    return epoch == 1 or epoch == epochs or epoch % every == 0


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over ``n`` shuffled images.

    A last batch of a single image is skipped (BatchNorm cannot train on one
    image, and one image is no batch); with a fresh order every epoch, each
    image is still seen. Batches of one throughout (``batch_size=1``) stay.
    """
    stop = n - 1 if n % batch_size == 1 and n > batch_size else n
    return [(start, min(start + batch_size, stop)) for start in range(0, stop, batch_size)]


def train_batches(
    model: nn.Module,
    train: Split,
    order: torch.Tensor,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    penalty: WeightPenalty,
    augment: Augment | None = None,
) -> torch.Tensor:
    """The epoch's batches over ``train`` in ``order``; returns the sums of data loss and penalty, on the device.

    Device work only (no host synchronisation), so that a CUDA graph can hold it.
    """
    sums = train.x.new_zeros(2)
    for start, stop in batch_bounds(len(order), batch_size):
        index = order[start:stop]
        x, y = train.x[index], train.y[index]
        if augment is not None:
            x = augment(x)
        data_loss = F.cross_entropy(model(x), y)
        penalty_term = penalty(model)
        optimizer.zero_grad(set_to_none=True)
        (data_loss + penalty_term).backward()
        optimizer.step()
        sums += torch.stack([data_loss.detach(), penalty_term.detach()])
    return sums


def epoch_stats(sums: torch.Tensor, batches: int) -> list[EpochStats]:
    """EpochStats from sums (2, runs) or (2,) over an epoch's batches: its one host-device synchronisation."""
    means = (sums / batches).reshape(2, -1).T.tolist()
    return [EpochStats(data, penalty) for data, penalty in means]


def train_epoch(
    model: nn.Module,
    train: Split,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    penalty: WeightPenalty,
    augment: Augment | None = None,
) -> EpochStats:
    """One pass over ``train`` in a fresh random order."""
    model.train()
    order = torch.randperm(len(train), device=train.y.device)
    sums = train_batches(model, train, order, batch_size, optimizer, penalty, augment)
    return epoch_stats(sums, len(batch_bounds(len(train), batch_size)))[0]


def epoch_trainer(ctx: RunContext) -> Callable[[], EpochStats]:
    """The native loop's epoch: replayed as a CUDA graph where ``train.cuda_graph`` and the run allow, else eager."""
    cfg = ctx.cfg
    eager = functools.partial(train_epoch, ctx.model, ctx.data.train, cfg.data.batch_size, ctx.optimizer,
                              ctx.penalty, ctx.augment)
    if not graph_wanted(cfg.train.cuda_graph, ctx.device, ctx.optimizer, ctx.log, ctx.model):
        return eager
    make_capturable(ctx.optimizer)
    train, batches = ctx.data.train, len(batch_bounds(len(ctx.data.train), cfg.data.batch_size))
    graph: EpochGraph | None = None

    def run(order: torch.Tensor) -> torch.Tensor:
        return train_batches(ctx.model, train, order, cfg.data.batch_size, ctx.optimizer, ctx.penalty, ctx.augment)

    def graphed() -> EpochStats:
        nonlocal graph
        ctx.model.train()
        order = torch.randperm(len(train), device=train.y.device)
        if graph is None:
            graph = EpochGraph(run, order, lambda: [*ctx.model.parameters(), *ctx.model.buffers(),
                                                     *optimizer_state(ctx.optimizer)])
        return epoch_stats(graph(order), batches)[0]

    return graphed


def graph_wanted(setting: str | bool, device: torch.device, optimizer: torch.optim.Optimizer | None,
                 log: logging.Logger, model: nn.Module | None = None) -> bool:
    """Whether to capture epochs as CUDA graphs: ``auto`` wherever it can, ``true`` insists, ``false`` never."""
    if setting is False:
        return False
    reason = why_not_graphed(device, optimizer, model)
    if reason is None:
        return True
    if setting is True or device.type == "cuda":
        log.info("train.cuda_graph=%s: %s; the eager loop trains", str(setting).lower(), reason)
    return False


# --- the bookkeeping every engine does for each run ------------------------------------------


def begin_run(ctx: RunContext, hooks: Sequence[Hook], first_epoch: int) -> None:
    for hook in hooks:
        hook.on_start(ctx, first_epoch)


def end_epoch(
    ctx: RunContext,
    hooks: Sequence[Hook],
    epoch: int,
    stats: EpochStats,
    metrics: dict[str, float] | None,
    wall_time_s: float,
    sync_model: Callable[[], None] | None = None,
) -> None:
    """Record an epoch that trained; raise StopRun when it ends the run (diverged, or a hook's say).

    ``sync_model``, given by an engine whose ctx.model is a copy, refreshes it
    before the hooks that read it. At evaluation epochs, when the hooks have work,
    torch runs on one thread (``threads.one_thread``).
    """
    result = ctx.result
    result.epochs_completed = epoch
    result.wall_time_s = wall_time_s
    reason = divergence(stats)
    if reason:
        raise Diverged(reason)
    with one_thread(when=metrics is not None):
        improved = False
        if metrics is not None:
            metrics = {"epoch": epoch, **metrics, "penalty": stats.penalty}
            improved = result.record(metrics)
            result.save(ctx.run_dir)
        if sync_model is not None and any(hook.needs_model(epoch, improved) for hook in hooks):
            sync_model()
        for hook in hooks:
            hook.on_epoch_end(ctx, epoch, stats, metrics, improved)


def end_run(ctx: RunContext, hooks: Sequence[Hook], status: Status, error: str | None, wall_time_s: float) -> None:
    """Close the record: the end state of a clean end, every hook's ``on_end``, and the result file.

    Every hook's ``on_end`` runs, in order, even when something before it
    raised (a pending ``best.pt`` must reach the disk whatever the TensorBoard
    writer did); an error among them is raised once all have run.
    """
    result = ctx.result
    result.finish(status, error)
    result.wall_time_s = wall_time_s
    with one_thread():
        try:
            with contextlib.ExitStack() as ending:
                for hook in reversed(hooks):  # an ExitStack calls back last in, first out
                    ending.callback(hook.on_end, ctx)
                if status.clean_end:
                    result.weights = weight_stats(ctx.model)
                    result.entropy_mean = ctx.entropy().mean().item()
        finally:
            result.save(ctx.run_dir)
    if error:
        ctx.log.warning("run stopped (%s) with %d epochs completed: %s", status, result.epochs_completed, error)


# --- the native engine -------------------------------------------------------------------------


def fit(ctx: RunContext, hooks: Sequence[Hook], first_epoch: int = 1) -> Status:
    """Train ``ctx.model`` from ``first_epoch`` to ``cfg.epochs``; returns how the run ended."""
    cfg, result = ctx.cfg, ctx.result
    elapsed_before, started = result.wall_time_s, time.perf_counter()

    def clock() -> float:
        return elapsed_before + time.perf_counter() - started

    progress = Progress(cfg.epochs, first_epoch, ctx.log)
    train_one_epoch = epoch_trainer(ctx)
    status, error = Status.COMPLETED, None
    try:
        with deferred_interrupts() as stop_request:
            begin_run(ctx, hooks, first_epoch)
            for epoch in range(first_epoch, cfg.epochs + 1):
                stats = train_one_epoch()
                metrics = evaluate_all(ctx.model, ctx.data) if is_eval_epoch(epoch, cfg.epochs, cfg.eval_every) else None
                end_epoch(ctx, hooks, epoch, stats, metrics, clock())
                progress.epoch_done(epoch, result.final if metrics else None)
                stop_request.check(epoch)
    except StopRun as stop:
        status, error = stop.status, str(stop)
        result.exit_code = stop.exit_code
    except BaseException as failure:
        # Mid-epoch: the model is between two states, so no last.pt is taken (the last periodic one stands;
        # best.pt gets the best finished epoch's state).
        status = Status.ABORTED if isinstance(failure, KeyboardInterrupt) else Status.FAILED
        error = repr(failure)
        raise
    finally:
        progress.close()
        end_run(ctx, hooks, status, error, clock())
    return status
