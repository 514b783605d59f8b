"""The native engine: the epoch loop of one run.

Read ``fit`` top to bottom like nanoGPT's loop: an epoch is a random
permutation of the training split sliced into batches; each batch is
(optionally) augmented, goes forward in train mode, and its loss (cross-entropy
+ weight penalty) goes backward. On evaluation epochs (the first, the last and
every ``eval_every``) the three splits are evaluated in eval mode and recorded.
Then the run's lifecycle sees the epoch; a hook, a blown-up loss or a signal
may end the run early, always at an epoch boundary. No DataLoader: the data
already sits on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hreg.augment import Augment
from hreg.data import Split
from hreg.engines.graph import EpochGraph, graph_wanted, make_capturable, optimizer_state
from hreg.hooks import EpochStats, Hook, RunContext
from hreg.lifecycle import Lifecycle
from hreg.metrics import evaluate_all
from hreg.progress import Progress
from hreg.regularizer import WeightPenalty
from hreg.result import Status
from hreg.schedule import batch_bounds, is_eval_epoch, lr_factor, set_lr
from hreg.stops import deferred_signals


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

    Device work only (no host synchronisation), so that a CUDA graph can hold it. Each batch's
    small operations cost about as much as its matrix products on a CPU, so none is added that the
    run does not need: no penalty term without a penalty.
    """
    sums = train.x.new_zeros(2)
    for start, stop in batch_bounds(len(order), batch_size):
        index = order[start:stop]
        # index_select, not x[index]: the same rows, several times faster on a CPU (bench_epoch.py).
        x, y = train.x.index_select(0, index), train.y.index_select(0, index)
        if augment is not None:
            x = augment(x)
        loss = data_loss = F.cross_entropy(model(x), y)
        if penalty.active:
            penalty_term = penalty(model)
            loss = data_loss + penalty_term
            sums[1] += penalty_term.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums[0] += data_loss.detach()
    return sums


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
    return EpochStats.from_sums(sums, len(batch_bounds(len(train), batch_size)))[0]


def epoch_trainer(ctx: RunContext) -> Callable[[], EpochStats]:
    """The native loop's epoch: replayed as a CUDA graph where ``train.cuda_graph`` and the run allow, else eager."""
    cfg = ctx.cfg
    eager = functools.partial(train_epoch, ctx.model, ctx.data.train, cfg.data.batch_size, ctx.optimizer,
                              ctx.penalty, ctx.augment)
    if not graph_wanted(cfg.train.cuda_graph, ctx.device, ctx.optimizer, ctx.log, ctx.model, cfg.lr_schedule):
        return eager
    make_capturable(ctx.optimizer)
    train, batches = ctx.data.train, len(batch_bounds(len(ctx.data.train), cfg.data.batch_size))
    graph: EpochGraph | None = None

    def batches_in(order: torch.Tensor) -> torch.Tensor:
        return train_batches(ctx.model, train, order, cfg.data.batch_size, ctx.optimizer, ctx.penalty, ctx.augment)

    def graphed() -> EpochStats:
        nonlocal graph
        ctx.model.train()
        order = torch.randperm(len(train), device=train.y.device)
        if graph is None:
            graph = EpochGraph(batches_in, order, lambda: [*ctx.model.parameters(), *ctx.model.buffers(),
                                                     *optimizer_state(ctx.optimizer)])
        return EpochStats.from_sums(graph(order), batches)[0]

    return graphed


def fit(ctx: RunContext, hooks: Sequence[Hook], first_epoch: int = 1) -> Status:
    """Train ``ctx.model`` from ``first_epoch`` to ``cfg.epochs``; returns how the run ended."""
    cfg = ctx.cfg
    progress = Progress(cfg.epochs, first_epoch, ctx.log)
    train_one_epoch = epoch_trainer(ctx)
    try:
        with deferred_signals() as stop_request, Lifecycle(ctx, hooks, first_epoch) as run:
            for epoch in range(first_epoch, cfg.epochs + 1):
                set_lr(ctx.optimizer, lr_factor(cfg.lr_schedule, epoch, cfg.epochs))
                stats = train_one_epoch()
                metrics = evaluate_all(ctx.model, ctx.data) if is_eval_epoch(epoch, cfg.epochs, cfg.eval_every) else None
                run.end_epoch(epoch, stats, metrics)
                run.judge(epoch)
                progress.epoch_done(epoch, ctx.result.final if metrics else None)
                stop_request.check(epoch)
    finally:
        progress.close()
    return ctx.result.status
