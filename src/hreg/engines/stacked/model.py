"""K copies of the course's MLP as one model: every weight gains a leading member dimension.

A stack is built from K ordinary ``hreg.model.MLP`` instances (each initialised
from its own run's seed, exactly as the native loop initialises it), trains as
batched matrix products (``torch.baddbmm``), and writes each member back into
its MLP when a hook or a checkpoint needs it. Semantics are those of the MLP,
member by member: Linear -> [BatchNorm1d | LayerNorm] -> ReLU -> [Dropout],
BatchNorm on the member's own batch in training and its running statistics in
evaluation, inverted dropout with the member's own p, in training only.
Members may differ in normalisation (kind and settings): each block of
consecutive members with one normalisation is normalised as a block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from hreg.model import MLP

_NORMS = {nn.BatchNorm1d: "batchnorm", nn.LayerNorm: "layernorm"}

T = TypeVar("T")


class Norm(NamedTuple):
    """A member's normalisation: ``kind`` (batchnorm, layernorm or none) and its settings."""

    kind: str
    eps: float = 0.0
    momentum: float = 0.0


class _Weights(NamedTuple):
    """The stack's tensors by layer, for all members or a subset of them, and the subset's blocks of
    members with one normalisation (rows relative to the subset)."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    gains: list[torch.Tensor]
    shifts: list[torch.Tensor]
    running_mean: list[torch.Tensor]
    running_var: list[torch.Tensor]
    norms: list[tuple[slice, Norm]]


def _norm_layers(model: MLP) -> list[nn.Module]:
    return [m for m in model if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]


def norm_of(model: MLP) -> Norm:
    """The normalisation of ``model``'s hidden layers (the same in each of them)."""
    norms = _norm_layers(model)
    if not norms:
        return Norm("none")
    kind = _NORMS[type(norms[0])]
    return Norm(kind, norms[0].eps, norms[0].momentum if kind == "batchnorm" else 0.0)


def blocks(values: Sequence[T]) -> list[tuple[slice, T]]:
    """Blocks of consecutive equal values, as (their rows, the value): the blocks of a stack's members
    that one call can serve (one normalisation, one optimizer setting)."""
    found: list[tuple[slice, T]] = []
    for k, value in enumerate(values):
        if found and found[-1][1] == value:
            found[-1] = (slice(found[-1][0].start, k + 1), value)
        else:
            found.append((slice(k, k + 1), value))
    return found


def span(flags: Sequence[bool]) -> slice:
    """The rows from the first flagged member to the last (empty when none is): a slice is a view, so
    work on a stack's members that have a feature costs no gathering, and a stack orders its members so
    that those with a feature sit together (``Stack``); members inside the span without it get neutral
    values (a keep rate of 1, a penalty of 0)."""
    rows = [i for i, flag in enumerate(flags) if flag]
    return slice(rows[0], rows[-1] + 1) if rows else slice(0, 0)


class ReluDropout(torch.autograd.Function):
    """ReLU, then inverted dropout with each member's own keep rate on the rows ``rows`` of a stack's
    activations h (K, features, B), in place; masks are drawn for those rows only.

    The output alone gives the gradient: where it is positive the unit was active and kept, and its
    gradient is the incoming one times the row's 1 / keep rate; elsewhere it is zero.
    So neither a mask nor another copy of the activations is kept, and the rows without dropout cost
    nothing beyond the ReLU (a mask of ones over the whole stack, as first written, made a few members
    with dropout slow down every member of their stack).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, rows: slice, keep_rate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = h.relu_()
        dropping = h[rows]
        dropping.mul_(torch.empty_like(dropping).uniform_().lt_(keep_rate).div_(keep_rate))
        ctx.mark_dirty(h)
        ctx.save_for_backward(h, keep_rate)
        ctx.rows = rows
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        out, keep_rate = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, out, 0)  # ReLU's own backward, on the output
        grad[ctx.rows] *= keep_rate.reciprocal()  # the kept units' factor in the forward pass, 1 / keep rate
        return grad, None, None


def _normalise(h: torch.Tensor, i: int, p: _Weights, training: bool) -> torch.Tensor:
    """Hidden layer i's normalisation of the activations h (K, features, B): each block of members with
    one normalisation as a block, the blocks joined again (one copy) where the stack mixes them."""
    if len(p.norms) == 1:
        return _normalise_block(h, i, p, p.norms[0][0], p.norms[0][1], training)
    return torch.cat([_normalise_block(h[rows], i, p, rows, norm, training) for rows, norm in p.norms])


def _normalise_block(h: torch.Tensor, i: int, p: _Weights, rows: slice, norm: Norm,
                     training: bool) -> torch.Tensor:
    """BatchNorm1d or LayerNorm (or nothing) of the activations h of the members ``rows``, with their
    own affine parameters, by torch's fused kernels (faster than the arithmetic written out)."""
    if norm.kind == "none":
        return h
    gain, shift = p.gains[i][rows], p.shifts[i][rows]
    if norm.kind == "layernorm":  # over the features, made the last dimension: torch's kernel wants them dense
        normed = F.layer_norm(h.transpose(1, 2).contiguous(), h.shape[1:2], eps=norm.eps)
        out = torch.addcmul(shift.unsqueeze(1), normed, gain.unsqueeze(1)).transpose(1, 2)
        return out.contiguous() if training else out  # ReLU's backward on the strided view is much slower
    mean, var = p.running_mean[i][rows], p.running_var[i][rows]  # views: training updates the stack's own
    if training:  # each member's features are channels of their own: (1, K * features, B), statistics over B
        k, features, b = h.shape
        out = F.batch_norm(h.reshape(1, k * features, b), mean.view(-1), var.view(-1), gain.reshape(-1),
                           shift.reshape(-1), training=True, momentum=norm.momentum, eps=norm.eps)
        return out.view(k, features, b)
    scale = gain.unsqueeze(2) * torch.rsqrt(var.unsqueeze(2) + norm.eps)
    return torch.addcmul(shift.unsqueeze(2) - mean.unsqueeze(2) * scale, h, scale)


def _stacked_tensors(members: Sequence[MLP], has_norm: bool) -> tuple[list[torch.Tensor], ...]:
    """The members' tensors stacked (K, ...), new tensors (the members' own stay theirs): the trained ones in
    the order of ``MLP.parameters()`` (each Linear's weight and bias, then, in a stack with norms, its
    norm's gain and shift), and the hidden layers' BatchNorm running means and variances (none without)."""
    linears = [list(m.linear_layers().values()) for m in members]
    norm_layers = [_norm_layers(m) for m in members]

    def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([t.detach() for t in tensors])

    def norm_tensor(i: int, name: str, neutral: float) -> torch.Tensor:
        """Hidden layer i's ``name`` (gain, shift, running statistic) of every member's norm, ``neutral``
        for a member whose norm has none (it never reads the row; a mixed stack keeps one layout)."""
        like = linears[0][i].bias
        return stack([getattr(ns[i], name) if ns and getattr(ns[i], name, None) is not None
                      else torch.full_like(like, neutral) for ns in norm_layers])

    params = []
    hidden = range(len(linears[0]) - 1 if has_norm else 0)
    for i in range(len(linears[0])):
        params += [stack([ls[i].weight for ls in linears]), stack([ls[i].bias for ls in linears])]
        if i in hidden:
            params += [norm_tensor(i, "weight", 1.0), norm_tensor(i, "bias", 0.0)]
    batchnorm = any(isinstance(n, nn.BatchNorm1d) for ns in norm_layers for n in ns)
    running_mean = [norm_tensor(i, "running_mean", 0.0) for i in hidden] if batchnorm else []
    running_var = [norm_tensor(i, "running_var", 1.0) for i in hidden] if batchnorm else []
    return params, running_mean, running_var


class StackedMLP:
    """The weights of K MLPs of one architecture, stacked; ``dropout`` is each member's p."""

    def __init__(self, members: Sequence[MLP], dropout: Sequence[float]) -> None:
        self.norms = [norm_of(m) for m in members]
        self.norm_blocks = blocks(self.norms)
        self.has_norm = any(n.kind != "none" for n in self.norms)
        params, self.running_mean, self.running_var = _stacked_tensors(members, self.has_norm)
        self._set_parameters(params)
        self.dropout = [float(p) for p in dropout]
        self._dropout_span()

    def _dropout_span(self) -> None:
        """The rows that draw dropout masks (``span``: first to last member with a p), and their keep rates."""
        self.dropped = span([p > 0 for p in self.dropout])
        keep = [1 - p for p in self.dropout[self.dropped]]  # 1 for a member inside the span without dropout
        self.keep_rate = torch.tensor(keep, device=self.weights[0].device).view(-1, 1, 1)

    def _set_parameters(self, tensors: list[torch.Tensor]) -> None:
        """The trained tensors, each (K, ...) and contiguous, so that a slice of members is a contiguous
        tensor too (the optimizer's fused kernels take them) and autograd hands over fresh gradients."""
        params = self.params = [t.detach().contiguous().requires_grad_() for t in tensors]
        step = self._step()
        self.weights, self.biases = params[0::step], params[1::step]
        self.gains, self.shifts = (params[2::step], params[3::step]) if self.has_norm else ([], [])

    def _step(self) -> int:
        """Tensors a layer in ``params``: weight and bias, and the norm's gain and shift in a stack with norms."""
        return 4 if self.has_norm else 2

    def __len__(self) -> int:
        return self.weights[0].shape[0]

    def parameters(self) -> list[torch.Tensor]:
        """The trained tensors, in the order of the members' ``MLP.parameters()`` (``owned``)."""
        return self.params

    def owned(self, k: int) -> list[int]:
        """Positions in ``parameters()`` of member k's own ``MLP.parameters()``, in their order: all of
        them, but the norms' gains and shifts for a member without normalisation in a stack with norms."""
        mine = self.norms[k].kind != "none"
        return [j for j in range(len(self.params)) if j % self._step() < 2 or mine]

    def buffers(self) -> list[torch.Tensor]:
        return [*self.running_mean, *self.running_var]

    def linear_weights(self) -> list[torch.Tensor]:
        """The penalised weights (every Linear layer's, biases excluded), each (K, out, in)."""
        return self.weights

    # --- forward -----------------------------------------------------------------------------

    def _slices(self, members: torch.Tensor | None) -> _Weights:
        tensors = (self.weights, self.biases, self.gains, self.shifts, self.running_mean, self.running_var)
        if members is None:
            return _Weights(*tensors, self.norm_blocks)
        return _Weights(*([t[members] for t in group] for group in tensors),
                        blocks([self.norms[k] for k in members.tolist()]))

    def _layers(self, h: torch.Tensor, p: _Weights, training: bool, first_done: bool = False,
                inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The layers on activations h (K, features, B), feature-major: each product ``W @ h`` gives the next
        layer's (K, out, B) with no transposed copies, forward or backward (the weights' gradients come out
        in their own layout), and cross-entropy takes the logits (K, classes, B) as they are."""
        last = len(p.weights) - 1
        for i, (w, b) in enumerate(zip(p.weights, p.biases)):
            if inputs is not None:  # the layer's input as (K, B, in), on the path autograd differentiates
                rows = h.transpose(1, 2)
                inputs.append(rows)
                h = rows.transpose(1, 2)
            if not (i == 0 and first_done):
                h = torch.baddbmm(b.unsqueeze(2), w, h)
            if i == last:
                return h
            if self.has_norm:
                h = _normalise(h, i, p, training)
            # In place, on a fresh tensor that backward does not need: no copy.
            if training and self.dropped.stop > self.dropped.start:
                h = ReluDropout.apply(h, self.dropped, self.keep_rate)
            else:
                h = F.relu(h, inplace=True)
        return h

    def forward(self, x: torch.Tensor, training: bool, inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (K, B, classes) of member k for its own images x[k]: x is (K, B, features).

        ``inputs``, when given, receives each Linear layer's input (K, B, in), for their gradients.
        """
        logits = self._layers(x.transpose(1, 2), self._slices(None), training, inputs=inputs)
        return logits.transpose(1, 2)

    @torch.no_grad()
    def predictor(self, members: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Eval mode for the ``members`` (positions; None: all): a function from images x (N, features),
        the same for every member, to their logits (M, N, classes).

        Their weights are gathered once here, not for every chunk of images. The first
        layer is one matrix product for all of them (their weights stacked against x),
        whose (M * out, N) result is already the feature-major (M, out, N); the rest
        are batched per member.
        """
        p = self._slices(members)
        m, out = p.weights[0].shape[:2]
        first_weight, first_bias = p.weights[0].reshape(m * out, -1), p.biases[0].reshape(-1, 1)

        def predict(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                h = torch.addmm(first_bias, first_weight, x.T).view(m, out, len(x))
                logits = self._layers(h, p, training=False, first_done=True)  # (M, classes, N)
                return logits.transpose(1, 2).contiguous()  # argmax over a strided dim is much slower

        return predict

    # --- members in and out --------------------------------------------------------------------

    @torch.no_grad()
    def write_member(self, k: int, model: MLP, batches: torch.Tensor) -> None:
        """Member k's weights and statistics into ``model`` (an MLP of the same architecture);
        ``batches``: how many batches it has trained (BatchNorm's ``num_batches_tracked``)."""
        for i, layer in enumerate(model.linear_layers().values()):
            layer.weight.copy_(self.weights[i][k])
            layer.bias.copy_(self.biases[i][k])
        for i, layer in enumerate(_norm_layers(model)):
            layer.weight.copy_(self.gains[i][k])
            layer.bias.copy_(self.shifts[i][k])
            if isinstance(layer, nn.BatchNorm1d):
                layer.running_mean.copy_(self.running_mean[i][k])
                layer.running_var.copy_(self.running_var[i][k])
                layer.num_batches_tracked.copy_(batches)

    def keep(self, members: torch.Tensor) -> None:
        """Only these members go on (the others ended): every stacked tensor loses the rest."""
        kept = members.tolist()
        self.norms = [self.norms[k] for k in kept]
        self.norm_blocks = blocks(self.norms)
        self._set_parameters([t.detach()[members] for t in self.params])
        self.running_mean = [t[members] for t in self.running_mean]
        self.running_var = [t[members] for t in self.running_var]
        self.dropout = [self.dropout[k] for k in kept]
        self._dropout_span()
