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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from hreg.augment import AugmentSettings, BatchAugment
from hreg.data import Split, Splits
from hreg.engines.graph import EpochGraph, graph_wanted
from hreg.engines.stacked.model import Norm, StackedMLP, norm_of, span
from hreg.engines.stacked.optim import StackedOptimizer
from hreg.hooks import EpochStats, Hook, RunContext
from hreg.lifecycle import Lifecycle
from hreg.metrics import PROBE_SIZE, SPLITS, Probe, eval_chunk, log_probs_entropy, logits_entropy, probe_set
from hreg.progress import Progress
from hreg.schedule import batch_bounds, is_eval_epoch
from hreg.stops import StopRun, deferred_signals

log = logging.getLogger("hreg")

#: Images per evaluation pass of a stack (``metrics.EVAL_CHUNK`` is one model's). On a CPU, small
#: enough that every member's activations stay in the caches; on a GPU, large enough that a pass is a
#: few big kernels.
STACK_EVAL_CHUNK = {"cpu": 2048, "cuda": 32768}


@dataclass(eq=False)
class MemberContext(RunContext):
    """A member's RunContext: its snapshot measurements come from the stack, which takes them for every
    member at once (its own ``model`` is a copy, refreshed when a hook reads it)."""

    stack: Stack | None = None

    def probe(self) -> Probe:
        return self.stack.probe(self)

    def entropy(self) -> torch.Tensor:
        return self.stack.probe(self).entropy


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
    run: Lifecycle = field(init=False)
    failure: Exception | None = None

    def __post_init__(self) -> None:
        self.progress = Progress(self.ctx.cfg.epochs, self.first_epoch, self.ctx.log, bar=False)


_PENALTY_ORDER = {"none": 0, "l1": 1, "l2": 2}


def _penalty_kind(ctx: RunContext) -> str:
    return ctx.penalty.kind if ctx.penalty.active else "none"


def _stack_order(member: Member) -> tuple[Norm, bool, int]:
    """Members by normalisation (each one's rows a block: one call of its kernel), then with dropout
    last, and within each part by penalty: each feature's rows are one slice, or few."""
    return norm_of(member.ctx.model), member.ctx.cfg.model.dropout > 0, _PENALTY_ORDER[_penalty_kind(member.ctx)]


class Stack:
    """The members still training, as stacked tensors; positions in the stack follow ``self.members``."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = sorted(members, key=_stack_order)  # a feature's work is on one slice of rows (``span``)
        ctxs = [m.ctx for m in self.members]
        cfg = ctxs[0].cfg
        self.device = ctxs[0].device
        self.batch_size = cfg.data.batch_size
        self.model = StackedMLP([c.model for c in ctxs], [c.cfg.model.dropout for c in ctxs])
        self.optimizer = StackedOptimizer([c.cfg.optimizer for c in ctxs], self.model.parameters())
        settings = [AugmentSettings(**{k: v for k, v in c.cfg.augment.items() if not k.startswith("_")}) for c in ctxs]
        self.augment = BatchAugment(settings) if any(s.active for s in settings) else None
        self.lam = {kind: [c.penalty.lam if _penalty_kind(c) == kind else 0.0 for c in ctxs] for kind in ("l1", "l2")}
        self._penalties()
        self.graphed = graph_wanted(cfg.train.cuda_graph, self.device, None, log)
        self.graph: EpochGraph | None = None  # captured at the first epoch, again after members leave
        # The distinct splits (one per data.seed), their training images side by side for gathering batches.
        self.splits: list[Splits] = []
        for ctx in ctxs:
            if not any(ctx.data is s for s in self.splits):
                self.splits.append(ctx.data)
        self.split_of = torch.tensor([next(i for i, s in enumerate(self.splits) if c.data is s) for c in ctxs],
                                     device=self.device)
        # Training images of every split, one row each: a member's batch is rows split * n + its indices.
        self.train_x = torch.cat([s.train.x.flatten(1) for s in self.splits])
        self.train_y = torch.cat([s.train.y for s in self.splits])
        self.train_size = len(self.splits[0].train)
        self.image_shape = tuple(self.splits[0].train.x.shape[1:])
        # MNIST's training images in their own order (every split partitions them), and for each split
        # the masks (splits, images) of its train and val parts: what ``evaluate`` sums over.
        first = self.splits[0]
        index = torch.from_numpy(np.concatenate([first.train_index, first.val_index])).to(self.device)
        x, y = torch.cat([first.train.x, first.val.x]), torch.cat([first.train.y, first.val.y])
        self.images = Split(torch.empty_like(x).index_copy_(0, index, x), torch.empty_like(y).index_copy_(0, index, y))
        self.masks = [torch.zeros(len(self.splits), len(self.images), device=self.device) for _ in range(2)]
        for i, split in enumerate(self.splits):
            for masks, index in zip(self.masks, (split.train_index, split.val_index)):
                masks[i, torch.from_numpy(index).to(self.device)] = 1
        # Each split's probe set (``metrics.probe_set``: its first validation images) as rows of ``images``.
        self.probe_rows = (torch.stack([torch.from_numpy(s.val_index[:PROBE_SIZE]) for s in self.splits]).to(self.device)
                           if len(first.val) else None)

        self._probes: dict[RunContext, Probe] | None = None  # this epoch's snapshot measurements, by member context
        self._entropy: torch.Tensor | None = None  # this epoch's evaluation's entropies (K, images), if any
        for position, member in enumerate(self.members):
            member.ctx = MemberContext(**{f.name: getattr(member.ctx, f.name) for f in fields(RunContext)}, stack=self)
            member.run = Lifecycle(member.ctx, member.hooks, member.first_epoch,
                                   sync_model=functools.partial(self.write, member))
            if member.first_epoch > 1:  # resumed: its optimizer's state as its checkpoint left it
                self.optimizer.load(position, member.ctx.optimizer, self.model.owned(position))

    def _column(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    def __len__(self) -> int:
        return len(self.members)

    # --- one epoch -------------------------------------------------------------------------------

    def _penalties(self) -> None:
        """Each penalty's rows (``span``) and their lams (K_kind, 1, 1), decided here, not per batch."""
        self.penalised = {}
        for kind, lams in self.lam.items():
            rows = span([lam > 0 for lam in lams])
            if rows.stop > rows.start:
                self.penalised[kind] = (rows, self._column(lams[rows]).view(-1, 1, 1))

    @torch.no_grad()
    def penalty(self) -> torch.Tensor:
        """Each member's weight penalty (K,), lam * sum |w| or lam * sum w^2 over its Linear weights, with
        its gradient (lam * sgn(w), 2 * lam * w, as autograd gives it) added to the weights' gradients:
        written out, a few passes over the penalised members' weights instead of autograd's dozen."""
        total = torch.zeros(len(self), device=self.device)
        for kind, (rows, lam) in self.penalised.items():
            for w in self.model.linear_weights():
                w, grad = w[rows], w.grad[rows]
                if kind == "l1":
                    total[rows] += lam.view(-1) * torch.linalg.vector_norm(w, 1, dim=(1, 2))
                    grad.addcmul_(w.sign(), lam)
                else:
                    total[rows] += lam.view(-1) * torch.linalg.vector_norm(w, 2, dim=(1, 2)).square()
                    grad.addcmul_(w, 2 * lam)
        return total

    def batch_order(self) -> torch.Tensor:
        """A random permutation of the training images for each member (K, n), in one draw."""
        return torch.rand(len(self), self.train_size, device=self.device).argsort(dim=1)

    def train_epoch(self) -> list[EpochStats]:
        """One pass of every member over its training split, in its own random order (eager, or a graph's replay)."""
        self._probes = self._entropy = None
        rows = self.batch_order() + self.train_size * self.split_of.unsqueeze(1)
        batches = len(batch_bounds(self.train_size, self.batch_size))
        if not self.graphed:
            return EpochStats.from_sums(self.train_batches(rows), batches)
        if self.graph is None:
            self.graph = EpochGraph(self.train_batches, rows, self._state)
        return EpochStats.from_sums(self.graph(rows), batches)

    def _state(self) -> list[torch.Tensor]:
        """Everything an epoch changes: weights, BatchNorm statistics, optimizer state."""
        optimizer = self.optimizer
        state = [t for slot in optimizer.state for t in slot]
        return [*self.model.parameters(), *self.model.buffers(), optimizer.steps, *state]

    def train_batches(self, rows: torch.Tensor) -> torch.Tensor:
        """The epoch's batches; ``rows`` (K, n) are the members' images in order. Returns sums (2, K) on the device."""
        k, n = len(self), self.train_size
        sums = torch.zeros(2, k, device=self.device)
        # The batches' images, gathered into one buffer for the epoch: on a CPU a fresh tensor for each
        # batch makes the gather several times slower.
        images = torch.empty(k * min(self.batch_size, n), self.train_x.shape[1], device=self.device)
        for start, stop in batch_bounds(n, self.batch_size):
            index = rows[:, start:stop].reshape(-1)
            x = torch.index_select(self.train_x, 0, index, out=images[: len(index)]).view(k, stop - start, -1)
            y = self.train_y.index_select(0, index).view(k, stop - start)
            if self.augment is not None:
                x = self.augment(x.view(k, stop - start, *self.image_shape)).flatten(2)
            logits = self.model.forward(x, training=True)
            data_loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)
            self.optimizer.zero_grad()
            data_loss.sum().backward()
            penalty = self.penalty()
            self.optimizer.step()
            sums += torch.stack([data_loss.detach(), penalty.detach()])
        return sums

    # --- evaluation ------------------------------------------------------------------------------

    def _by_split(self) -> Iterator[tuple[Splits, torch.Tensor]]:
        """Each distinct split with the positions of the members (still training) that use it."""
        for i, splits in enumerate(self.splits):
            members = (self.split_of == i).nonzero().flatten()
            if len(members):
                yield splits, members

    def _chunk(self) -> int:
        return eval_chunk(self.device, STACK_EVAL_CHUNK)

    def _predictor(self, members: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``StackedMLP.predictor`` for these members (positions, ascending: the whole stack needs no gathering)."""
        return self.model.predictor(None if len(members) == len(self) else members)

    def _logits(self, x: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits (M, N, classes) of the members on the images x (N, ...)."""
        predict = self._predictor(members)
        return torch.cat([predict(xs) for xs in x.flatten(1).split(self._chunk())], dim=1)

    def _per_image(self, split: Split) -> torch.Tensor:
        """(3, K, N): every member's cross-entropy, hit (1 or 0) and prediction entropy on each image of
        ``split``, in eval mode (cross-entropy as ``F.cross_entropy`` computes it: NLL of log-softmax)."""
        predict = self.model.predictor(None)
        out = torch.empty(3, len(self), len(split), device=self.device)
        for start in range(0, len(split), self._chunk()):
            rows = slice(start, start + self._chunk())
            logits, target = predict(split.x[rows].flatten(1)), split.y[rows].expand(len(self), -1)
            log_p = torch.log_softmax(logits.transpose(1, 2), dim=1)  # (K, classes, n): much faster than over dim -1
            out[0, :, rows] = F.nll_loss(log_p, target, reduction="none")
            out[1, :, rows] = logits.argmax(dim=-1) == target
            out[2, :, rows] = log_probs_entropy(log_p, dim=1)
        return out

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Loss and accuracy of every member on its train and val splits and on the test set.

        Every member sees all of MNIST's training images in one pass (its train and val splits are a
        partition of them) and the test set in another: two passes whatever the number of splits, each
        as wide as the stack. A member's means over its own splits are sums under its masks."""
        table = torch.empty(len(self), len(SPLITS), 2, device=self.device)
        per_image = self._per_image(self.images)
        for j, masks in enumerate(self.masks):
            mask = masks[self.split_of]  # (K, images): 1 on the member's images of this split
            table[:, j] = (per_image[:2] * mask).sum(dim=2).T / mask.sum(dim=1, keepdim=True)  # 0 / 0: nan, as for an empty split
        table[:, 2] = self._per_image(self.splits[0].test)[:2].mean(dim=2).T
        self._entropy = per_image[2]  # a snapshot at this epoch takes its entropies from here
        return [
            {f"{name}_{kind}": value for name, pair in zip(SPLITS, member) for kind, value in zip(("loss", "acc"), pair)}
            for member in table.tolist()
        ]

    # --- snapshots -------------------------------------------------------------------------------

    def probe(self, ctx: MemberContext) -> Probe:
        """A member's snapshot measurements (``RunContext.probe``), taken for every member at once."""
        if self._probes is None:
            self._probes = {m.ctx: p for m, p in zip(self.members, self._probe_all())}
        return self._probes[ctx]

    def _probe_all(self) -> list[Probe]:
        """Every member's input gradients and entropy, as ``metrics.probe`` measures one model's.

        The gradients come from one forward and backward pass of the stack in train mode on each
        member's first training batch (unaugmented); BatchNorm statistics and the random state are
        restored, and no parameter gradient is touched. Entropies come from this epoch's evaluation
        (snapshots are taken at evaluation epochs), else from an evaluation pass of their own.
        """
        k, size = len(self), min(self.batch_size, self.train_size)
        rows = (torch.arange(size, device=self.device) + self.train_size * self.split_of.unsqueeze(1)).reshape(-1)
        x = self.train_x.index_select(0, rows).view(k, size, -1).requires_grad_()
        y = self.train_y.index_select(0, rows).view(k, size)
        saved = [b.clone() for b in self.model.buffers()]
        inputs: list[torch.Tensor] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            logits = self.model.forward(x, training=True, inputs=inputs)
            loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1).sum()
            grads = torch.autograd.grad(loss, inputs)
        with torch.no_grad():
            for buffer, value in zip(self.model.buffers(), saved):
                buffer.copy_(value)
        if self._entropy is not None and self.probe_rows is not None:  # evaluated this epoch: no pass of its own
            entropy = self._entropy.gather(1, self.probe_rows[self.split_of])
        else:
            entropy = torch.empty(k, min(PROBE_SIZE, len(probe_set(self.splits[0]))), device=self.device)
            with torch.no_grad():
                for splits, members in self._by_split():
                    entropy[members] = logits_entropy(self._logits(probe_set(splits).x, members))
        names = list(self.members[0].ctx.model.linear_layers())
        return [Probe({name: g[m].detach() for name, g in zip(names, grads)}, entropy[m]) for m in range(k)]

    # --- members in and out ------------------------------------------------------------------------

    def write(self, member: Member) -> None:
        """Refresh ``member``'s own model and optimizer from the stack."""
        position = self.members.index(member)
        ctx = member.ctx
        self.model.write_member(position, ctx.model, batches=self.optimizer.steps)
        self.optimizer.export(position, ctx.optimizer, self.model.owned(position))

    def keep(self, positions: list[int]) -> None:
        """Go on with these members only."""
        index = torch.tensor(positions, device=self.device, dtype=torch.long)
        self.members = [self.members[p] for p in positions]
        self.model.keep(index)
        self.optimizer.keep(index, self.model.parameters())
        if self.augment is not None:
            self.augment = self.augment.keep(positions)
        self.lam = {kind: [lams[p] for p in positions] for kind, lams in self.lam.items()}
        self.split_of = self.split_of[index]
        if self._entropy is not None:
            self._entropy = self._entropy[index]
        self._penalties()
        self.graph = None  # it holds the old tensors: captured again at the next epoch


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
            self._step(member, member.run.begin)
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
            end = member.run.end(failure)
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
        stats = stack.train_epoch()
        tick = self._timed("training", tick)
        evaluated = is_eval_epoch(epoch, cfg.epochs, cfg.eval_every)
        metrics = stack.evaluate() if evaluated else [None] * len(stack)
        tick = self._timed("evaluation", tick)
        for position, member in enumerate(stack.members):  # every member reports ...
            self._step(member, functools.partial(member.run.end_epoch, epoch, stats[position], metrics[position]))
        for member in stack.members:  # ... before any is judged
            if member not in self.stopped:
                self._step(member, functools.partial(member.run.judge, epoch))
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
        ended = [m for m in self.stack.members if not m.run.over]
        for member in ended:
            self._finish(member, failure)
        self.stack.keep([])
        return ended

    def close(self) -> None:
        """Let go of the stack's tensors (each member's context held the stack) and log where the time went."""
        for member in self.members:
            member.ctx.stack = None
            member.run.sync_model = None
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
        run = StackRun(members, seed)
        try:
            while not run.done:
                run.step()
                stop_request.check(run.epoch)
        except BaseException as failure:
            run.stop(failure)
            raise
        finally:
            run.close()


class StackProgress(Progress):
    """The stack's own progress on the console: a bar on a terminal, about ten log lines."""

    def __init__(self, size: int, epochs: int, first_epoch: int = 1, bar: bool = True) -> None:
        super().__init__(epochs, first_epoch, log, bar=bar)
        self.size = size

    def summary(self, stack: Stack) -> dict[str, float]:
        best = max((m.ctx.result.best or {}).get("val_acc", math.nan) for m in stack.members) if len(stack) else math.nan
        return {"training": len(stack), "best_val_acc": best}

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"training": f"{metrics['training']}/{self.size}", "best_val_acc": f"{metrics['best_val_acc']:.4f}"}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"stack of {self.size}: {metrics['training']} training | best val acc {metrics['best_val_acc']:.4f}"
