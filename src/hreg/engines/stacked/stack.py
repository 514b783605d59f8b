"""The stacked engine: many runs trained at once as one batched model.

Every member is an ordinary run: ``build.build_context`` builds its model
(initialised from its own seed, so exactly as the native loop would), its
optimizer, penalty, augmentation and split; ``build.build_hooks`` its hooks;
and its own ``lifecycle.Lifecycle`` keeps its record, as for a native run.
Only the arithmetic is shared: the members' weights are stacked
(``StackedMLP``), an epoch trains all of them batch by batch, and an evaluation
runs all of them over the splits. A member's ``ctx.model`` is a copy that is
refreshed when a hook needs it (``Hook.needs_model``) and at its end.

Random draws: initialisation and the split come from the member's own seeds.
The draws during training (batch order, dropout masks, augmentation) come from
one generator for the whole stack, seeded with its first job's seed; a
member's draws are its own rows of each draw (members sit in the order of
``_stack_order``), so its trajectory depends on its stack-mates the way a
change of seed would, and the same sweep rerun gives the same metrics on the CPU.
In a pool (``StackRun`` with ``own_random_state``) each stack keeps its own copy
of that state, so stacks that take turns do not change each other's draws.

A member that diverges, is pruned, stops early or fails (a hook raised) ends
there, alone, and the stack goes on without it (its rows are dropped: it costs
nothing more). At each epoch every member reports (``Lifecycle.end_epoch``)
before any is judged (``Lifecycle.judge``), so that a pruner's verdict does not
depend on the members' order in the stack.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hreg.engines.stacked.evaluator import Evaluator
from hreg.engines.stacked.layout import Layout
from hreg.engines.stacked.model import Norm, StackedMLP, norm_of
from hreg.engines.stacked.trainer import Trainer, penalty_kind
from hreg.hooks import EpochStats, Hook, RunContext
from hreg.lifecycle import Lifecycle
from hreg.metrics import Probe
from hreg.progress import Progress
from hreg.schedule import is_eval_epoch, lr_factor
from hreg.stops import StopRun, deferred_signals

log = logging.getLogger("hreg")


@dataclass(eq=False)
class Member:
    """One run of a stack: its context and hooks, and its own log lines (in its own train.log).

    Members are equal only to themselves, and hashed so (keys of the pool's and the stack's tables).

    A member resumed from its checkpoint (``ctx`` restored from it) starts at
    ``first_epoch``, with the stack's random state of that checkpoint
    (``random_state``). ``failure`` is the exception that failed this member
    alone (a hook raised), for its job's return.
    """

    name: str
    ctx: RunContext
    hooks: list[Hook]
    first_epoch: int = 1
    random_state: list[torch.Tensor] | None = None
    progress: Progress = field(init=False)
    lifecycle: Lifecycle = field(init=False)
    failure: Exception | None = None

    def __post_init__(self) -> None:
        self.progress = Progress(self.ctx.cfg.epochs, self.first_epoch, self.ctx.log, bar=False)


_PENALTY_ORDER = {"none": 0, "l1": 1, "l2": 2}


def _stack_order(member: Member) -> tuple[Norm, bool, int]:
    """Members by normalisation (each one's rows a block: one call of its kernel), then with dropout
    last, and within each part by penalty: each feature's rows are one slice, or few."""
    return norm_of(member.ctx.model), member.ctx.cfg.model.dropout > 0, _PENALTY_ORDER[penalty_kind(member.ctx)]


def _weakly(method: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``method(*args)``, its object held weakly: a member calls back into its stack without keeping it
    alive (the stack holds its members; a strong reference back would be a cycle)."""
    ref = weakref.WeakMethod(method)
    return lambda: ref()(*args)


class Stack:
    """The members still training, their weights stacked in one model; positions in the stack follow
    ``self.members``. Its ``layout`` holds the members' data, its ``trainer`` trains them an epoch at a
    time, its ``evaluator`` measures them; each member's ``Lifecycle`` keeps its record."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = sorted(members, key=_stack_order)  # a feature's work is on one slice of rows (``span``)
        ctxs = [m.ctx for m in self.members]
        self.device = ctxs[0].device
        self.model = StackedMLP([c.model for c in ctxs], [c.cfg.model.dropout for c in ctxs])
        self.layout = Layout([c.data for c in ctxs], self.device)
        self.trainer = Trainer(ctxs, self.model, self.layout)
        self.evaluator = Evaluator(self.model, self.layout, ctxs[0].cfg.data.batch_size,
                                   list(ctxs[0].model.linear_layers()))
        for position, member in enumerate(self.members):
            member.ctx.prober = _weakly(self.probe, member)
            member.lifecycle = Lifecycle(member.ctx, member.hooks, member.first_epoch, sync_model=_weakly(self.write, member))
            if member.first_epoch > 1:  # resumed: its optimizer's state as its checkpoint left it
                self.trainer.optimizer.load(position, member.ctx.optimizer, self.model.owned(position))

    def __len__(self) -> int:
        return len(self.members)

    def train_epoch(self) -> list[EpochStats]:
        """One epoch of every member (``Trainer.train_epoch``)."""
        self.evaluator.forget()
        return self.trainer.train_epoch()

    def evaluate(self) -> list[dict[str, float]]:
        """Every member's losses and accuracies (``Evaluator.evaluate``), in stack order."""
        return self.evaluator.evaluate()

    def probe(self, member: Member) -> Probe:
        """A member's snapshot measurements (its context's ``probe``)."""
        return self.evaluator.probe(self.members.index(member))

    def write(self, member: Member) -> None:
        """Refresh ``member``'s own model and optimizer from the stack."""
        position = self.members.index(member)
        ctx = member.ctx
        self.model.write_member(position, ctx.model, batches=self.trainer.optimizer.steps)
        self.trainer.optimizer.export(position, ctx.optimizer, self.model.owned(position))

    def keep(self, positions: list[int]) -> None:
        """Go on with these members only."""
        index = torch.tensor(positions, device=self.device, dtype=torch.long)
        self.members = [self.members[p] for p in positions]
        self.model.keep(index)
        self.layout.keep(index)
        self.trainer.keep(positions, index)
        self.evaluator.keep(positions, index)


class StackRun:
    """One stack trained an epoch at a time (``step``), so that a pool of stacks can take turns.

    Each member lives in its own ``Lifecycle``: at each epoch every member
    reports, then every member is judged, then the members that stopped end
    and leave the stack. With ``own_random_state``, the stack draws from its own
    copy of torch's random state (seeded with ``seed``), so that its members'
    runs are the same whatever other stacks train between its epochs; without,
    it seeds torch's global generator once (a stack alone in its process).
    """

    def __init__(self, members: Sequence[Member], seed: int, own_random_state: bool = False,
                 console: bool = True) -> None:
        first_epochs = {m.first_epoch for m in members}
        if len(first_epochs) > 1:
            raise ValueError(f"the members of a stack start at the same epoch, not at {sorted(first_epochs)}")
        self.members = list(members)
        self.stack = Stack(members)
        self.cfg = members[0].ctx.cfg
        self.epoch = members[0].first_epoch - 1
        self.started = time.perf_counter()
        self.spent = {"training": 0.0, "evaluation": 0.0, "records and hooks": 0.0}  # for the closing log line
        self.console = StackProgress(len(members), self.cfg.epochs, self.epoch + 1, bar=console)
        device = self.stack.device
        self.cuda = [device] if device.type == "cuda" else []
        self.random_state: list[torch.Tensor] | None = None
        if own_random_state and members[0].random_state is not None:  # a resumed member's, from its checkpoint
            self.random_state = members[0].random_state
        elif own_random_state:
            with torch.random.fork_rng(devices=self.cuda):
                torch.manual_seed(seed)
                self.random_state = self._get_random_state()
        else:
            torch.manual_seed(seed)
        self.stopped: dict[Member, BaseException] = {}  # the members that end at this step, and why
        for member in self.stack.members:
            self._step(member, member.lifecycle.begin)
        self.ended = self._drop_stopped()

    @property
    def done(self) -> bool:
        return not len(self.stack)

    def __len__(self) -> int:
        return len(self.stack)

    def _get_random_state(self) -> list[torch.Tensor]:
        return [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in self.cuda)]

    def _set_random_state(self, state: list[torch.Tensor]) -> None:
        torch.set_rng_state(state[0])
        for d, s in zip(self.cuda, state[1:]):
            torch.cuda.set_rng_state(s, d)

    def _timed(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.spent[part] += now - since
        return now

    def _step(self, member: Member, action: Callable[[], None]) -> None:
        """One lifecycle step of a member; a stop or a failure of its own ends that member alone."""
        try:
            action()
        except StopRun as stop:
            self.stopped[member] = stop
        except Exception as failure:
            member.failure = self.stopped[member] = failure
            log.error("%s failed: %r", member.name, failure)

    def _finish(self, member: Member, failure: BaseException | None) -> None:
        member.progress.close()
        try:
            end = member.lifecycle.end(failure)
        except Exception as error:  # a hook's on_end raised (the record is saved): this member fails alone
            member.failure = member.failure or error
            log.error("%s failed at its end: %r", member.name, error)
            return
        if end.error:
            log.info("%s: %s at epoch %d: %s", member.name, end.status, member.ctx.result.epochs_completed, end.error)

    def _drop_stopped(self) -> list[Member]:
        ended = [m for m in self.stack.members if m in self.stopped]
        for member in ended:
            self._finish(member, self.stopped[member])
        if ended:
            self.stack.keep([p for p, m in enumerate(self.stack.members) if m not in self.stopped])
        self.stopped.clear()
        return ended

    def step(self) -> list[Member]:
        """Train the next epoch; returns the members that ended with it (all that remain after the last)."""
        if self.random_state is None:
            return self._epoch()
        with torch.random.fork_rng(devices=self.cuda):
            self._set_random_state(self.random_state)
            try:
                return self._epoch()
            finally:
                self.random_state = self._get_random_state()

    def _epoch(self) -> list[Member]:
        stack, cfg = self.stack, self.cfg
        self.epoch = epoch = self.epoch + 1
        tick = time.perf_counter()
        stack.trainer.optimizer.lr_factor = lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
        stats = stack.train_epoch()
        tick = self._timed("training", tick)
        evaluated = is_eval_epoch(epoch, cfg.epochs, cfg.eval_every)
        metrics = stack.evaluate() if evaluated else [None] * len(stack)
        tick = self._timed("evaluation", tick)
        for position, member in enumerate(stack.members):  # every member reports ...
            self._step(member, functools.partial(member.lifecycle.end_epoch, epoch, stats[position], metrics[position]))
        for member in stack.members:  # ... before any is judged
            if member not in self.stopped:
                self._step(member, functools.partial(member.lifecycle.judge, epoch))
        for member in stack.members:
            if member not in self.stopped:
                member.progress.epoch_done(epoch, member.ctx.result.final if evaluated else None)
        ended = self._drop_stopped()
        if epoch == cfg.epochs:
            ended += self.stop(None)
        self._timed("records and hooks", tick)
        self.console.epoch_done(epoch, self.console.summary(stack) if evaluated else None)
        return ended

    def stop(self, failure: BaseException | None) -> list[Member]:
        """End every member still training: completed (None), interrupted (``Interrupted``) or failed.

        After an exception mid-epoch no member's model is taken from the stack (the model is between two
        states: the last periodic ``last.pt`` stands, ``best.pt`` as kept)."""
        ended = [m for m in self.stack.members if not m.lifecycle.over]
        for member in ended:
            self._finish(member, failure)
        self.stack.keep([])
        return ended

    def close(self) -> None:
        """Close the console's progress and log where the time went."""
        self.console.close()
        log.info("stack of %d: %.1f s (%s)", len(self.members), time.perf_counter() - self.started,
                 ", ".join(f"{part} {seconds:.1f} s" for part, seconds in self.spent.items()))


def fit_stack(members: Sequence[Member], seed: int) -> None:
    """Train every member to its end; each one's record, hooks and files are kept as the native loop keeps them.

    A member that stops (a ``StopRun``) or fails (an exception in its hooks) ends
    alone. A clean stop on a signal ends every member interrupted
    (checkpointed) and raises ``Interrupted`` for the launcher to exit with.
    """
    with deferred_signals() as stop_request:
        stack_run = StackRun(members, seed)
        try:
            while not stack_run.done:
                stack_run.step()
                stop_request.check(stack_run.epoch)
        except BaseException as failure:
            stack_run.stop(failure)
            raise
        finally:
            stack_run.close()


class StackProgress(Progress):
    """The stack's own progress on the console: a bar on a terminal, about ten log lines."""

    def __init__(self, size: int, epochs: int, first_epoch: int = 1, bar: bool = True) -> None:
        super().__init__(epochs, first_epoch, log, bar=bar)
        self.size = size

    def summary(self, stack: Stack) -> dict[str, float]:
        best = max((m.ctx.result.best or {}).get("val_acc", math.nan) for m in stack.members) if len(stack) else math.nan
        return {"training": len(stack), "best_val_acc": best}

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"training": f"{metrics['training']}/{self.size}", "best_val_acc": best_text(metrics['best_val_acc'])}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"stack of {self.size}: {metrics['training']} training | best val acc {best_text(metrics['best_val_acc'])}"


def best_text(accuracy: float) -> str:
    """The training members' best validation accuracy; ``-`` once none trains (or none has been evaluated)."""
    return "-" if math.isnan(accuracy) else f"{accuracy:.4f}"
