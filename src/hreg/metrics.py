"""What a run measures about its model: losses and accuracies, weights, prediction entropy, input gradients.

Evaluation always runs in eval mode under no_grad (Dropout off, BatchNorm on
its running statistics), on whole splits, and restores the caller's mode. These
numbers go into the result file; the TensorBoard hook (monitor.py) draws on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hreg.data import Split, Splits
from hreg.model import MLP

#: Rows per forward pass in evaluation, by device type (``benchmarks/bench_epoch.py`` measures the
#: choice). On a CPU small enough that a chunk's activations stay in the caches; on a GPU large enough
#: that a pass is a few big kernels. Either way it bounds memory on big splits, and the logits are the
#: same bits whatever the chunk.
EVAL_CHUNK = {"cpu": 2048, "cuda": 20000}
#: A weight counts as "near zero" below this magnitude (what L1 drives weights to).
NEAR_ZERO = 1e-3
MAX_ENTROPY = math.log(10)
#: Validation images on which prediction entropy is measured (a fixed set, the same every time).
PROBE_SIZE = 10000
SPLITS = ("train", "val", "test")


def eval_chunk(device: torch.device, chunks: Mapping[str, int] = EVAL_CHUNK) -> int:
    """Rows per evaluation pass on ``device`` from a table by device type (a CPU's for other types)."""
    return chunks.get(device.type, chunks["cpu"])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Logits for ``x`` in eval mode, ``chunk`` rows at a time (``eval_chunk``); the caller's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(rows) for rows in x.split(chunk or eval_chunk(x.device))])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model on a whole split, in eval mode."""
    if len(split) == 0:
        return math.nan, math.nan
    logits = predict(model, split.x)
    loss = F.cross_entropy(logits, split.y).item()
    accuracy = (logits.argmax(dim=1) == split.y).float().mean().item()
    return loss, accuracy


def evaluate_all(model: nn.Module, data: Splits) -> dict[str, float]:
    """Loss and accuracy on train, val and test: keys like ``val_loss``, ``test_acc``."""
    metrics = {}
    for name in SPLITS:
        metrics[f"{name}_loss"], metrics[f"{name}_acc"] = evaluate(model, getattr(data, name))
    return metrics


def linear_weights(model: nn.Module) -> torch.Tensor:
    """All Linear weights of the model as one flat tensor (biases excluded)."""
    return torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, nn.Linear)])


def weight_stats(model: nn.Module) -> dict[str, float]:
    """Share of near-zero weights, L1 norm and L2 norm over all Linear weights."""
    w = linear_weights(model)
    return {
        "near_zero_share": (w.abs() < NEAR_ZERO).float().mean().item(),
        "l1_norm": w.abs().sum().item(),
        "l2_norm": w.norm().item(),
    }


def prediction_entropy(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the predicted class distribution, per example, in eval mode."""
    return logits_entropy(predict(model, x))


def logits_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax of ``logits`` over their last dimension (the classes)."""
    return log_probs_entropy(torch.log_softmax(logits, dim=-1))


def log_probs_entropy(log_p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy (nats) of the distributions whose log-probabilities are ``log_p`` (classes along ``dim``)."""
    return -(log_p.exp() * log_p).sum(dim=dim)


def probe_set(data: Splits) -> Split:
    """The fixed set on which entropies are measured: the first PROBE_SIZE validation images."""
    source = data.val if len(data.val) else data.test
    return Split(source.x[:PROBE_SIZE], source.y[:PROBE_SIZE])


def input_gradients(model: MLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """d(cross-entropy)/d(input) of each Linear layer, on one batch, in train mode.

    Looking changes nothing in training: the train/eval mode, BatchNorm running
    statistics and the random-number state are restored; parameter gradients
    are cleared, as every optimiser step clears them anyway.
    """
    inputs: dict[str, torch.Tensor] = {}

    def keep_input(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            args[0].retain_grad()
            inputs[name] = args[0]

        return hook

    buffers = {name: b.clone() for name, b in model.named_buffers()}
    handles = [layer.register_forward_pre_hook(keep_input(name)) for name, layer in model.linear_layers().items()]
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            F.cross_entropy(model(x.clone().requires_grad_()), y).backward()
        return {name: inp.grad.detach().clone() for name, inp in inputs.items()}
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


@dataclass
class Probe:
    """What a histogram snapshot measures of a model beyond its weights."""

    #: d(cross-entropy)/d(input) of each Linear layer (``fc1`` ...) on the first training batch, in train mode.
    input_grads: dict[str, torch.Tensor]
    #: Prediction entropy (nats) of each image of the probe set, in eval mode.
    entropy: torch.Tensor


def probe(model: MLP, data: Splits, batch_size: int) -> Probe:
    """The model's snapshot measurements: input gradients on the first ``batch_size`` training images
    (unaugmented), entropy on the probe set."""
    train = data.train
    return Probe(input_gradients(model, train.x[:batch_size], train.y[:batch_size]),
                 prediction_entropy(model, probe_set(data).x))
