"""The MLP, its regularizers and its train / eval modes."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from hreg import mnist
from hreg.data import Split
from hreg.metrics import evaluate, predict
from tests.conftest import compose_config


def build(*overrides: str) -> nn.Module:
    torch.manual_seed(0)
    return instantiate(compose_config(*overrides).model)


def test_default_model_is_the_course_mlp():
    model = build()
    shapes = [tuple(m.weight.shape) for m in model.linear_layers().values()]
    assert shapes == [(100, 784), (100, 100), (100, 100), (10, 100)]
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d, nn.LayerNorm)) for m in model.modules())
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("norm, layer", [("batchnorm", nn.BatchNorm1d), ("layernorm", nn.LayerNorm)])
def test_norm_sits_between_each_hidden_linear_and_its_relu(norm, layer):
    model = build(f"model/norm={norm}", "model.dropout=0.2")
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten] + [nn.Linear, layer, nn.ReLU, nn.Dropout] * 3 + [nn.Linear]


def test_dropout_is_stochastic_in_train_mode_and_deterministic_in_eval_mode():
    model = build("model.dropout=0.5")
    x = torch.randn(64, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_batchnorm_running_statistics_do_not_change_in_evaluation():
    model = build("model/norm=batchnorm")
    model.train()
    model(torch.randn(300, 1, 28, 28))  # move the running statistics away from their initial values
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    split = Split(torch.randn(500, 1, 28, 28) * 3 + 1, torch.randint(0, 10, (500,)))
    evaluate(model, split)
    predict(model, split.x)
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert before.keys() == after.keys() and len(before) == 6
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training, "evaluation restores the caller's mode"


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_evaluation_gives_the_same_logits_whatever_its_chunk(norm):
    """The chunk size of evaluation (metrics.EVAL_CHUNK, chosen for speed) changes no metric: same bits."""
    model = build(f"model/norm={norm}")
    model.train()
    model(mnist.load_normalised()["train_x"][:300])  # BatchNorm's running statistics away from their start
    images = mnist.load_normalised()["test_x"]
    whole = predict(model, images, chunk=len(images))
    for chunk in (1000, 2048, 4096, 20000):
        assert torch.equal(predict(model, images, chunk=chunk), whole), chunk


def test_evaluation_runs_without_building_a_graph():
    model = build()
    logits = predict(model, torch.randn(10, 1, 28, 28))
    assert not logits.requires_grad


def linear_weights_of(model: nn.Module) -> list[torch.Tensor]:
    return [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() == 2]


@pytest.mark.parametrize("kind, norm_of", [("l1", lambda w: w.abs().sum()), ("l2", lambda w: (w * w).sum())])
def test_penalty_is_lam_times_the_norm_of_linear_weights(kind, norm_of):
    cfg = compose_config(f"regularizer={kind}", "regularizer.lam=0.003", "model/norm=batchnorm")
    model, penalty = build("model/norm=batchnorm"), instantiate(cfg.regularizer)
    expected = 0.003 * sum(norm_of(w.detach().double()) for w in linear_weights_of(model))
    assert penalty(model).item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():  # biases and BatchNorm's affine parameters are not penalised
        for name, p in model.named_parameters():
            if not (name.endswith("weight") and p.dim() == 2):
                p.add_(1.0)
    assert penalty(model).item() == pytest.approx(expected.item(), rel=1e-5)


def test_no_regularizer_adds_nothing():
    assert instantiate(compose_config().regularizer)(build()).item() == 0.0
