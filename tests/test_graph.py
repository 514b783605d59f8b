"""Epochs captured as CUDA graphs (`train.cuda_graph`): a no-op on the CPU; on a GPU, the eager loop's results."""

from __future__ import annotations

import logging

import pytest
import torch

from hreg.build import build_context
from hreg.engines.graph import EpochGraph, graph_wanted, make_capturable, optimizer_state, why_not_graphed
from hreg.engines.native import train_batches
from hreg.engines.stacked.stack import Member, fit_stack
from hreg.hooks import EpochStats
from hreg.optimizer import build_optimizer
from hreg.run import train
from hreg.schedule import batch_bounds
from tests.conftest import QUICK, compose_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU case")
def test_on_the_cpu_the_option_changes_nothing_and_says_so(tmp_path, caplog):
    runs = {}
    for setting in ("auto", "true", "false"):
        with caplog.at_level(logging.INFO, logger="hreg"):
            caplog.clear()
            runs[setting] = train(compose_config(QUICK, "monitor=none", "model.dropout=0.2", "augment=noise",
                                                 f"train.cuda_graph={setting}"), tmp_path / setting)
        said = [r.getMessage() for r in caplog.records if "cuda_graph" in r.getMessage()]
        assert said == (["train.cuda_graph=true: CUDA graphs need a CUDA device, this run is on cpu; the eager loop trains"]
                        if setting == "true" else [])
    assert runs["auto"].history == runs["true"].history == runs["false"].history


@pytest.mark.parametrize("group", ["adam", "adamw"])
def test_the_fused_optimizers_of_the_configs_step_with_capturable_kernels_in_a_graph(group):
    """``fused: true`` (conf/optimizer) keeps no epoch out of a graph: captured, Adam and AdamW step with
    torch's capturable foreach kernels. SGD with ``fused=True`` still trains eagerly. (Only the device's
    type is read here: this runs on a CPU.)"""
    optimizer = build_optimizer(compose_config(f"optimizer={group}").optimizer, torch.nn.Linear(3, 2))
    assert optimizer.param_groups[0]["fused"] is True, "the config's choice reaches torch"
    assert why_not_graphed(torch.device("cuda"), optimizer) is None
    make_capturable(optimizer)
    assert [(g["capturable"], g["fused"]) for g in optimizer.param_groups] == [(True, False)]
    sgd = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, fused=True)
    assert why_not_graphed(torch.device("cuda"), sgd) == "SGD with fused=True is not supported"


def test_batchnorm_with_a_cumulative_average_trains_eagerly_with_one_line_saying_why(tmp_path, caplog):
    """``model.norm.momentum=null`` reads a count on the host at every batch, which a capture refuses: on a
    GPU, ``auto`` falls back to the eager loop. (The check reads only the device's type: this runs on a CPU.)"""
    ctx = build_context(compose_config(QUICK, "monitor=none", "model/norm=batchnorm", "model.norm.momentum=null"),
                        tmp_path)
    cuda_device = torch.device("cuda")
    assert why_not_graphed(cuda_device, ctx.optimizer, ctx.model) == (
        "BatchNorm with momentum=null reads its batch count on the host at every batch")
    with caplog.at_level(logging.INFO, logger="hreg"):
        assert not graph_wanted("auto", cuda_device, ctx.optimizer, logging.getLogger("hreg"), ctx.model)
    assert [r.getMessage() for r in caplog.records] == [
        "train.cuda_graph=auto: BatchNorm with momentum=null reads its batch count on the host at every batch; "
        "the eager loop trains"]
    default = build_context(compose_config(QUICK, "monitor=none", "model/norm=batchnorm"), tmp_path / "default")
    assert why_not_graphed(cuda_device, default.optimizer, default.model) is None


def test_a_learning_rate_that_changes_every_epoch_trains_eagerly():
    """The optimizer's kernels take the learning rate as a number: a captured epoch would replay its own."""
    assert why_not_graphed(torch.device("cuda"), lr_schedule="cosine") == (
        "lr_schedule=cosine changes the learning rate every epoch, and a captured epoch keeps its own")
    assert why_not_graphed(torch.device("cuda"), lr_schedule="constant") is None


@cuda
@pytest.mark.parametrize("variant", [["model.dropout=0.2", "augment=noise_affine"], ["model/norm=batchnorm",
                                      "regularizer=l2"], ["optimizer=sgd", "model/norm=layernorm"]])
def test_a_graphed_run_reaches_the_eager_runs_accuracy(tmp_path, variant):
    results = {}
    for setting in ("true", "false"):
        cfg = compose_config("epochs=200", "monitor=none", "device=cuda", f"train.cuda_graph={setting}", *variant)
        results[setting] = train(cfg, tmp_path / setting)
    assert abs(results["true"].final["val_acc"] - results["false"].final["val_acc"]) < 0.003, results


@cuda
def test_a_graphed_stack_reaches_the_eager_stacks_accuracy(tmp_path):
    """The stacked engine's epochs as graphs (the fused optimizer kernels, penalties and dropout masks inside)."""
    variants = [["regularizer=l1"], ["model.dropout=0.2", "augment=noise_affine"], ["regularizer=l2", "optimizer.lr=3e-3"]]
    finals = {}
    for setting in ("true", "false"):
        members = [Member(str(i), build_context(compose_config("epochs=200", "eval_every=200", "monitor=none",
                                                               "checkpoint.every=0", "device=cuda", f"seed={i}",
                                                               f"train.cuda_graph={setting}", *variant),
                                                tmp_path / setting / str(i)), [])
                   for i, variant in enumerate(variants)]
        fit_stack(members, seed=0)
        finals[setting] = [m.ctx.result.final["val_acc"] for m in members]
    assert all(abs(graphed - eager) < 0.003 for graphed, eager in zip(finals["true"], finals["false"])), finals


@cuda
@pytest.mark.parametrize("dropout, differs", [(0.5, True), (0.0, False)])
def test_random_draws_inside_the_graph_are_new_at_every_replay(tmp_path, dropout, differs):
    cfg = compose_config("monitor=none", "device=cuda", "optimizer=sgd", f"model.dropout={dropout}")
    ctx = build_context(cfg, tmp_path)
    for group in ctx.optimizer.param_groups:
        group["lr"] = 0.0  # the model stays the same: only the draws can change the loss
    make_capturable(ctx.optimizer)
    order = torch.arange(len(ctx.data.train), device="cuda")

    def run(o: torch.Tensor) -> torch.Tensor:
        return train_batches(ctx.model, ctx.data.train, o, 300, ctx.optimizer, ctx.penalty, ctx.augment)

    graph = EpochGraph(run, order, lambda: [*ctx.model.parameters(), *optimizer_state(ctx.optimizer)])
    batches = len(batch_bounds(len(order), 300))
    first, second = EpochStats.from_sums(graph(order), batches)[0], EpochStats.from_sums(graph(order), batches)[0]
    assert (first.data_loss != second.data_loss) == differs
