"""Stacked training (`hydra/launcher=stacked`): the same runs as the native loop, trained as one model."""

from __future__ import annotations

import copy
import gc
import json
import signal
import statistics
import time
import weakref
from pathlib import Path
from unittest import mock

import optuna
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState
from torch import nn

from hreg import checkpoint
from hreg.build import build_context, build_hooks
from hreg.hooks import Hook
from hreg.engines.native import fit, train_epoch
from hreg.data import build_data
from hreg.metrics import evaluate_all, prediction_entropy, probe, probe_set, weight_stats
from hreg.model import MLP
from hreg.run import train
from hreg.search.study import RUN_DIR_ATTR, STATUS_ATTR, database_url
from hreg.engines.stacked.stack import Member, Stack, StackRun, fit_stack
from hreg.engines.stacked.grouping import plan_stacks, stack_key
from hreg.engines.stacked.grouping import default_max_members
from hreg.engines.stacked.model import ReluDropout, StackedMLP
from hreg.engines.stacked.optim import StackedOptimizer
from tests.conftest import compose_config, events, read_result, run_cli, run_train, start_train

FAST = ("data.train_fraction=0.02", "eval_every=1")


# --- the arithmetic: the stack is K MLPs and K torch optimizers ---------------------------------------


#: Each member's normalisation: one kind a stack, and a stack that mixes them, not in blocks (BatchNorm's
#: members apart, one with its own momentum and eps).
NORMS = {"none": [["model/norm=none"]] * 3, "batchnorm": [["model/norm=batchnorm"]] * 3,
         "layernorm": [["model/norm=layernorm"]] * 3,
         "mixed": [["model/norm=batchnorm"], ["model/norm=none"], ["model/norm=layernorm"],
                   ["model/norm=batchnorm", "model.norm.momentum=0.3", "model.norm.eps=1e-3"], ["model/norm=batchnorm"]]}


@pytest.mark.parametrize("norm", list(NORMS))
def test_a_stack_computes_what_each_of_its_mlps_computes(norm):
    models = []
    for seed, overrides in enumerate(NORMS[norm]):
        torch.manual_seed(seed)
        models.append(instantiate(compose_config(*overrides).model))
    k = len(models)
    stack = StackedMLP(models, [0.0] * k)
    x, y = torch.randn(k, 40, 784), torch.randint(0, 10, (k, 40))
    outputs = [m.train()(x[i]) for i, m in enumerate(models)]
    got = stack.forward(x, training=True)
    assert torch.allclose(got, torch.stack(outputs), atol=1e-5)  # BatchNorm on each own batch
    losses = nn.functional.cross_entropy(got.transpose(1, 2), y, reduction="none").mean(1)
    losses.sum().backward()
    for i, model in enumerate(models):  # each member's gradients, on its own parameters (``owned``)
        nn.functional.cross_entropy(outputs[i], y[i]).backward()
        params = [stack.parameters()[j] for j in stack.owned(i)]
        assert len(params) == len(list(model.parameters()))
        for mine, theirs in zip(params, model.parameters(), strict=True):
            assert torch.allclose(mine.grad[i], theirs.grad, atol=1e-5)
    shared = torch.randn(50, 784)
    expected = torch.stack([m.eval()(shared) for m in models])  # running statistics moved the same way
    assert torch.allclose(stack.predictor(None)(shared), expected, atol=1e-5)
    assert torch.allclose(stack.predictor(torch.tensor([2, 0]))(shared), expected[[2, 0]], atol=1e-5)


#: Each member's optimizer overrides: two members with the same numbers (one fused call on two rows)
#: and one apart, with weight decay, and momentum on and off within one stack.
OPTIMIZER_MEMBERS = {
    "adam": [["optimizer=adam"], ["optimizer=adam"], ["optimizer=adam", "optimizer.lr=3e-3", "+optimizer.weight_decay=1e-2"]],
    "adamw": [["optimizer=adamw"], ["optimizer=adamw"], ["optimizer=adamw", "optimizer.lr=3e-3", "optimizer.weight_decay=1.0"]],
    "sgd": [["optimizer=sgd", "optimizer.momentum=0"], ["optimizer=sgd"], ["optimizer=sgd", "optimizer.weight_decay=0.1"]],
    "sgd,no momentum": [["optimizer=sgd", "optimizer.momentum=0", f"optimizer.lr={lr}"] for lr in (1e-2, 1e-2, 3e-2)],
    # A member without normalisation among members with it: its state is that of its own parameters. (SGD:
    # the gradient of a bias before BatchNorm is float noise, which Adam's step amplifies to lr.)
    "sgd,mixed norms": [["optimizer=sgd", "model/norm=batchnorm"], ["optimizer=sgd", "model/norm=none"],
                        ["optimizer=sgd", "model/norm=layernorm", "optimizer.lr=3e-2"]],
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZER_MEMBERS))
def test_stacked_optimizer_steps_as_torch_does_with_each_members_numbers(optimizer):
    composed = [compose_config(*overrides) for overrides in OPTIMIZER_MEMBERS[optimizer]]
    configs = [c.optimizer for c in composed]
    models = []
    for seed, cfg in enumerate(composed):
        torch.manual_seed(seed)
        models.append(instantiate(cfg.model))
    ours = copy.deepcopy(models)
    theirs = [instantiate(c)(m.parameters()) for c, m in zip(configs, models)]
    stack = StackedMLP(ours, [0.0] * 3)
    stacked = StackedOptimizer(configs, stack.parameters())
    for _ in range(5):
        x, y = torch.randn(3, 64, 784), torch.randint(0, 10, (3, 64))
        for i, (model, opt) in enumerate(zip(models, theirs)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
        stacked.zero_grad()
        nn.functional.cross_entropy(stack.forward(x, True).transpose(1, 2), y, reduction="none").mean(1).sum().backward()
        stacked.step()
    for k, (model, opt) in enumerate(zip(models, theirs)):
        mine, own_opt = copy.deepcopy(ours[k]), instantiate(configs[k])(ours[k].parameters())
        stack.write_member(k, mine, batches=stacked.steps)
        for a, b in zip(model.parameters(), mine.parameters()):
            assert torch.allclose(a, b, atol=1e-4), "the same five steps (Adam amplifies float noise a little)"
        stacked.export(k, own_opt, stack.owned(k))  # the member's state, in torch's own format: it loads and resumes
        loaded = instantiate(configs[k])(mine.parameters())
        loaded.load_state_dict(own_opt.state_dict())
        for state, reference in zip(loaded.state_dict()["state"].values(), opt.state_dict()["state"].values()):
            for key, value in reference.items():
                assert torch.allclose(torch.as_tensor(state[key]), torch.as_tensor(value), atol=1e-5), key


def test_each_member_drops_units_at_its_own_rate_and_members_without_dropout_none():
    torch.manual_seed(0)
    p = [0.0, 0.3, 0.0, 0.5]  # the span of rows that draw masks holds a member without dropout
    models = [MLP() for _ in p]
    stack = StackedMLP(models, p)
    x, inputs = torch.randn(len(p), 3000, 784), []
    stack.forward(x, training=True, inputs=inputs)
    for k, (model, rate) in enumerate(zip(models, p)):
        relu = torch.relu(model.linear_layers()["fc1"](x[k])).detach()
        dropped = inputs[1][k].detach()  # the second Linear layer's input: ReLU, then dropout
        if rate == 0:
            assert torch.allclose(dropped, relu, atol=1e-5)  # nothing dropped, nothing scaled
            continue
        active = relu > 1e-3
        kept = dropped[active] != 0
        assert abs(1 - kept.float().mean().item() - rate) < 0.01, (k, rate)
        assert torch.allclose(dropped[active][kept], relu[active][kept] / (1 - rate), atol=1e-5)


def test_a_stacks_relu_and_dropout_and_their_gradient_are_relu_then_each_rows_mask():
    h, upstream = torch.randn(4, 100, 300), torch.randn(4, 100, 300)
    rows, keep = slice(1, 3), torch.tensor([0.7, 1.0]).view(-1, 1, 1)  # in the span, a member without dropout
    torch.manual_seed(0)
    x = h.clone().requires_grad_()
    out = ReluDropout.apply(x * 1, rows, keep)  # on a fresh tensor, as in the stack
    out.backward(upstream)
    torch.manual_seed(0)  # the same draws, written out: ReLU, then a mask of ones but on the span
    y = h.clone().requires_grad_()
    mask = torch.ones_like(h)
    mask[rows] = torch.empty(2, 100, 300).uniform_().lt_(keep).div_(keep)
    expected = torch.relu(y) * mask
    expected.backward(upstream)
    assert torch.equal(out, expected)
    assert torch.equal(x.grad, y.grad)
    active = h[1] > 0
    assert abs((out[1][active] == 0).float().mean().item() - 0.3) < 0.01  # p = 0.3 on its active units
    assert torch.equal(out[[0, 2, 3]], torch.relu(h[[0, 2, 3]]))  # no dropout: ReLU alone


def test_the_stacks_penalty_is_each_members_own_with_its_gradient(tmp_path):
    variants = [("regularizer=l1", "regularizer.lam=1e-3"), ("model.dropout=0.2",),
                ("regularizer=l2", "regularizer.lam=1e-2"), ("regularizer=l1", "regularizer.lam=3e-4", "model.dropout=0.2")]
    members = [Member(str(i), build_context(compose_config("monitor=none", f"seed={i}", *v), tmp_path / str(i)), [])
               for i, v in enumerate(variants)]
    stack = Stack(members)
    assert [m.name for m in stack.members] == ["0", "2", "1", "3"]  # dropout last, then by penalty: rows in spans
    for p in stack.model.parameters():  # as after a backward pass: the penalty's gradient is added to these
        p.grad = torch.zeros_like(p)
    total = stack.trainer.penalty()
    for k, member in enumerate(stack.members):
        model = member.ctx.model
        model.zero_grad()
        expected = member.ctx.penalty(model)
        if member.ctx.penalty.active:
            expected.backward()
        assert total[k].item() == pytest.approx(expected.item(), rel=1e-5)
        for i, layer in enumerate(model.linear_layers().values()):
            grad = layer.weight.grad if layer.weight.grad is not None else torch.zeros_like(layer.weight)
            assert torch.allclose(stack.model.weights[i].grad[k], grad, atol=1e-8)


def test_a_stack_evaluates_each_member_on_its_own_split(tmp_path):
    """One pass over MNIST's training images for all members, summed under each member's masks: the
    metrics evaluate_all gives each member's own model on its own split (three splits, stack reordered)."""
    variants = [("model.dropout=0.2",), ("regularizer=l1",), ("model.dropout=0.2", "regularizer=l2"), ()]
    members = [Member(str(i), build_context(compose_config("monitor=none", f"seed={i}", f"data.seed={i % 3}", *v),
                                            tmp_path / str(i)), []) for i, v in enumerate(variants)]
    stack = Stack(members)
    stack.train_epoch()
    for position, (member, got) in enumerate(zip(stack.members, stack.evaluate())):
        stack.write(member)
        expected = evaluate_all(member.ctx.model, member.ctx.data)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-5), (member.name, key)


def test_a_member_trained_in_the_native_loops_batch_order_reaches_the_native_loops_metrics(tmp_path):
    cfg = compose_config("monitor=none", "regularizer=l1", "model/norm=layernorm")
    native = build_context(cfg, tmp_path / "native")
    member = build_context(cfg, tmp_path / "member", data=native.data)
    stack = Stack([Member("m", member, [])])
    for epoch in range(3):
        torch.manual_seed(epoch)
        train_epoch(native.model, native.data.train, 300, native.optimizer, native.penalty)
        torch.manual_seed(epoch)
        order = torch.randperm(3000)  # the native loop's order, given to the stack
        stack.trainer.batch_order = lambda order=order: order.unsqueeze(0)
        stack.train_epoch()
    expected, got = evaluate_all(native.model, native.data), stack.evaluate()[0]
    assert expected["val_acc"] > 0.85
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=2e-3), key



@pytest.mark.parametrize("evaluated", [False, True], ids=["own pass", "from the evaluation"])
def test_a_stack_probes_each_member_as_the_native_monitor_probes_its_model(tmp_path, evaluated):
    """Snapshots are taken for the whole stack in one pass: the same input gradients and entropies as
    each member's own model gives, and nothing in the stack's training state changes."""
    ctxs = [build_context(compose_config("monitor=none", "model/norm=batchnorm", f"seed={i}", f"data.seed={i % 2}",
                                         "data.train_fraction=0.01"), tmp_path / str(i)) for i in range(3)]
    stack = Stack([Member(str(i), ctx, []) for i, ctx in enumerate(ctxs)])
    stack.train_epoch()
    if evaluated:  # a snapshot at an evaluation epoch: entropies from the evaluation's own pass
        stack.evaluate()

    def state() -> list[torch.Tensor]:
        return [*stack.model.parameters(), *stack.model.buffers(), *(p.grad for p in stack.model.parameters())]

    before = [t.clone() for t in state()]
    for position, member in enumerate(stack.members):
        stack.write(member)
        got, expected = member.ctx.probe(), probe(member.ctx.model, member.ctx.data, 300)
        assert got.input_grads.keys() == expected.input_grads.keys() == {"fc1", "fc2", "fc3", "fc4"}
        for name, grad in expected.input_grads.items():
            assert grad.abs().max() > 0
            assert torch.allclose(got.input_grads[name], grad, rtol=1e-4, atol=1e-6 * grad.abs().max()), name
        assert torch.allclose(got.entropy, expected.entropy, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, state(), strict=True))

def test_a_stack_that_has_ended_is_freed_at_once(tmp_path):
    """Its members call back into it (snapshots, model refreshes) through weak references: no cycle keeps
    its tensors alive until a garbage collection, and none is broken by hand."""
    members = [Member(str(i), build_context(compose_config("monitor=none", "epochs=2", f"seed={i}", *FAST),
                                            tmp_path / str(i)), []) for i in range(2)]
    stack_run = StackRun(members, seed=0)
    while not stack_run.done:
        stack_run.step()
    stack_run.close()
    assert all(m.ctx.result.epochs_completed == 2 for m in members)
    stack = weakref.ref(stack_run.stack)
    gc.disable()
    try:
        del stack_run
        assert stack() is None
    finally:
        gc.enable()


# --- equivalence on real MNIST, as a study would see it ------------------------------------------------------

VARIANTS = {"none": [], "l1": ["regularizer=l1", "regularizer.lam=1e-3"], "dropout": ["model.dropout=0.3"],
            "batchnorm": ["model/norm=batchnorm"], "layernorm": ["model/norm=layernorm"],
            "augment": ["augment=noise_affine"], "cosine": ["lr_schedule=cosine", "optimizer.lr=3e-3"]}
SEEDS = (0, 1, 2)
EQUIVALENCE = ("epochs=25", "eval_every=25", "monitor=none", "checkpoint.every=0")


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory) -> dict[str, dict[str, list]]:
    """Every variant and seed, trained by the native loop and, all at once, by one stack."""
    work = tmp_path_factory.mktemp("equivalence")
    native = {v: [train(compose_config(*EQUIVALENCE, *o, f"seed={s}"), work / f"n-{v}-{s}") for s in SEEDS]
              for v, o in VARIANTS.items()}
    members = {v: [] for v in VARIANTS}
    stacks: dict[str, list[Member]] = {}  # one a learning-rate schedule, as the launcher groups them
    for v in VARIANTS:
        for s in SEEDS:
            ctx = build_context(compose_config(*EQUIVALENCE, *VARIANTS[v], f"seed={s}"), work / f"s-{v}-{s}")
            stacks.setdefault(ctx.cfg.lr_schedule, []).append(Member(f"{v}/{s}", ctx, build_hooks(ctx)))
            members[v].append(ctx.result)
    for stack in stacks.values():
        fit_stack(stack, seed=0)
    return {"native": native, "stacked": members}


def mean(results: list, value) -> float:
    return statistics.mean(value(r) for r in results)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stacked_members_match_native_runs_on_average_over_seeds(both_engines, variant):
    accuracy = {engine: mean(runs[variant], lambda r: r.final["val_acc"]) for engine, runs in both_engines.items()}
    assert all(r.status == "completed" for r in both_engines["stacked"][variant])
    assert abs(accuracy["stacked"] - accuracy["native"]) < 0.005, accuracy


def test_what_regularizers_do_keeps_its_direction_in_both_engines(both_engines):
    for engine, runs in both_engines.items():
        near_zero = {v: mean(runs[v], lambda r: r.weights["near_zero_share"]) for v in ("none", "l1")}
        gap = {v: mean(runs[v], lambda r: r.final["train_acc"] - r.final["val_acc"]) for v in ("none", "dropout")}
        assert near_zero["l1"] > 2 * near_zero["none"], (engine, near_zero)
        assert gap["dropout"] < gap["none"], (engine, gap)


# --- grouping --------------------------------------------------------------------------------------------------


def test_the_default_stack_size_counts_each_members_share_of_the_data_splits():
    """Half the free memory, a member counting 48 MiB and its share of the 230 MiB splits: in a sweep over
    seeds each member brings a split of its own (data.seed follows seed), in a study of 3 seeds an eighth."""
    cpu = torch.device("cpu")
    with mock.patch("psutil.virtual_memory", return_value=mock.Mock(available=2 * 2**30)):  # 1024 MiB to use
        assert default_max_members(cpu, splits_per_member=1.0) == 3  # 1024 // (48 + 230)
        assert default_max_members(cpu, splits_per_member=3 / 24) == 12  # 1024 // 76.75 = 13, at most 12 on a CPU
    with mock.patch("psutil.virtual_memory", return_value=mock.Mock(available=2**28)):
        assert default_max_members(cpu, splits_per_member=1.0) == 1  # never none: a stack of one trains alone


def test_jobs_stack_when_shapes_and_schedule_agree_and_anything_else_may_differ():
    def key(*overrides: str, device: str = "cpu"):
        return stack_key(compose_config(*overrides), device)

    base = key()
    assert base is not None
    for differs_per_member in ("seed=3", "data.seed=5", "optimizer.lr=0.01", "regularizer=l2", "model.dropout=0.2",
                               "augment=affine", "objective=val_loss", "monitor=none", "early_stopping.patience=3"):
        assert key(differs_per_member) == base, differs_per_member
    norms = [("model/norm=batchnorm",), ("model/norm=batchnorm", "model.norm.momentum=0.5"), ("model/norm=layernorm",)]
    on_gpu = {key(*n, device="cuda") for n in norms} | {key(device="cuda")}
    assert len(on_gpu) == 1 and None not in on_gpu  # on a GPU, one stack for every normalisation
    assert len({key(*n) for n in norms} | {base}) == 4  # on the CPU, one for each
    assert key("model/norm=batchnorm", "model.norm.momentum=null") is None  # a cumulative average: runs alone
    for differs_per_stack in ("epochs=7", "eval_every=3", "data.batch_size=100",
                              "optimizer=sgd", "model.hidden=[50,50]", "data.train_fraction=0.1",
                              "train.cuda_graph=false", "lr_schedule=cosine"):
        assert key(differs_per_stack) != base, differs_per_stack
    assert key("+optimizer.amsgrad=true") is None  # not implemented for stacks: runs alone
    keys = [base, key("epochs=7"), base, None, base]
    assert plan_stacks(keys, max_members=2) == [[0, 2], [1], [3], [4]]


# --- the launcher, end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stacked_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stacked")
    proc = run_train(
        "-m", "hydra/launcher=stacked", "regularizer=l1,none", "seed=0,1", "epochs=4", "monitor.histograms=3",
        "checkpoint.every=2", *FAST, f"hydra.sweep.dir={root / 'sweep'}", cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching 4 jobs as 1 stack (4)" in proc.stdout + proc.stderr
    return root / "sweep"


def test_every_stacked_job_has_the_directory_a_native_job_has(stacked_sweep):
    for job in range(4):
        run_dir = stacked_sweep / str(job)
        assert {p.name for p in (run_dir / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
        result = read_result(run_dir)
        assert result["launcher"] == "stacked" and result["status"] == "completed" and result["epochs_completed"] == 4
        assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
        assert result["weights"]["l2_norm"] > 0 and "random_model_entropy" in result
        assert "completed: best val acc" in (run_dir / "train.log").read_text()
        acc = events(run_dir)
        assert [e.step for e in acc.Scalars("loss/val")] == [1, 2, 3, 4]
        assert [e.step for e in acc.Histograms("weights/fc1")] == [1, 3, 4]  # at most monitor.histograms=3
        assert "input_grad/fc4" in acc.Tags()["histograms"] and "entropy/model" in acc.Tags()["histograms"]
        best = checkpoint.load(run_dir / "checkpoints" / checkpoint.BEST)
        assert best["epoch"] == result["best"]["epoch"]
        assert checkpoint.load(run_dir / "checkpoints" / checkpoint.LAST)["epoch"] == 4
    kinds = [read_result(stacked_sweep / str(j))["config"]["regularizer"]["kind"] for j in range(4)]
    assert kinds == ["l1", "l1", "none", "none"]  # in the stack, the others first (members sit by penalty)
    assert "4 runs: 4 completed." in (stacked_sweep / "report.md").read_text()


def test_a_stacked_jobs_checkpoint_evaluates_to_its_recorded_metrics(stacked_sweep):
    run_dir = stacked_sweep / "2"
    proc = run_cli("hreg-eval", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads((run_dir / "eval_best.json").read_text())
    best = read_result(run_dir)["best"]
    for key in ("val_acc", "test_acc", "val_loss"):
        assert evaluated[key] == pytest.approx(best[key], abs=1e-4), key


def test_a_stacked_jobs_final_record_measures_its_own_final_model(stacked_sweep):
    """The end-of-run entropy comes from the stack's measurement of every member at once (the stack
    orders its members by penalty: here not in job order): it is each job's own, as its final model
    (checkpoints/last.pt) gives it on its own split (data.seed follows seed: each seed has its own)."""
    for job in range(4):
        run_dir = stacked_sweep / str(job)
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        model = instantiate(cfg.model)
        checkpoint.load_model(model, checkpoint.load(run_dir / "checkpoints" / "last.pt"), run_dir)
        result = read_result(run_dir)
        entropy = prediction_entropy(model, probe_set(build_data(cfg.data, torch.device("cpu"))).x).mean().item()
        assert result["entropy_mean"] == pytest.approx(entropy, abs=1e-5), job
        assert result["weights"]["l1_norm"] == pytest.approx(weight_stats(model)["l1_norm"], rel=1e-5), job


def test_the_same_stacked_sweep_twice_gives_the_same_metrics(stacked_sweep, tmp_path):
    proc = run_train(
        "-m", "hydra/launcher=stacked", "regularizer=l1,none", "seed=0,1", "epochs=4", "monitor.histograms=3",
        "checkpoint.every=2", *FAST, f"hydra.sweep.dir={tmp_path / 'again'}", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in range(4):
        assert read_result(tmp_path / "again" / str(job))["history"] == read_result(stacked_sweep / str(job))["history"]


def test_a_diverging_member_is_frozen_and_the_others_train_on(tmp_path):
    proc = run_train("-m", "hydra/launcher=stacked", "optimizer.lr=1e-3,1e6,2e-3", "epochs=6", "monitor=none", *FAST,
                     f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [read_result(tmp_path / "s" / str(j)) for j in range(3)]
    assert [r["status"] for r in results] == ["completed", "diverged", "completed"]
    assert results[1]["epochs_completed"] == 1 and not (tmp_path / "s" / "1" / "checkpoints" / "last.pt").exists()
    assert all(r["final"]["val_acc"] > 0.8 for r in (results[0], results[2]))
    assert "job 1 (optimizer.lr=1000000.0 epochs=6" in proc.stdout and "diverged at epoch 1" in proc.stdout
    assert "job 2 (optimizer.lr=0.002 epochs=6 monitor=none data.train_fraction=0.02 eval_every=1): completed" in proc.stdout


def test_a_group_of_one_runs_through_the_native_loop(tmp_path):
    proc = run_train("-m", "hydra/launcher=stacked", "epochs=2,3", "monitor=none", *FAST,
                     f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching 2 jobs as 2 stacks (1, 1)" in proc.stdout + proc.stderr
    for job in range(2):
        result = read_result(tmp_path / "s" / str(job))
        assert result["status"] == "completed" and "launcher" not in result


def test_a_mistake_in_any_job_stops_the_stack_with_one_line_before_training(tmp_path):
    proc = run_train("-m", "hydra/launcher=stacked", "regularizer=l1", "regularizer.lam=1e-4,-1", *FAST,
                     f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "hreg: error: regularizer.lam=-1: must be a number >= 0"
    assert not list((tmp_path / "s").glob("*/result.json"))


def test_ctrl_c_checkpoints_every_member_and_each_resumes(tmp_path):
    sweep = tmp_path / "s"
    proc = start_train("-m", "hydra/launcher=stacked", "seed=0,1,2", "epochs=300", "monitor=none",
                       "data.train_fraction=0.02", "eval_every=10", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (sweep / "2" / "result.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    out = proc.stdout.read()
    assert "Launching 3 jobs as 1 stack (3)" in out and "hreg-resume" in out
    for job in range(3):
        result = read_result(sweep / str(job))
        assert result["status"] == "interrupted" and result["epochs_completed"] < 300
        assert checkpoint.load(sweep / str(job) / "checkpoints" / checkpoint.LAST)["epoch"] == result["epochs_completed"]
    resumed = run_cli("hreg-resume", str(sweep / "1"))
    assert resumed.returncode == 0, resumed.stderr
    assert read_result(sweep / "1")["status"] == "completed" and read_result(sweep / "1")["epochs_completed"] == 300


def test_an_optuna_search_on_the_stacked_launcher_prunes_and_tells_every_trial(tmp_path):
    args = ("-m", "hydra/sweeper=optuna", "hydra/launcher=stacked", "hydra.sweeper.study_name=st",
            "hydra.sweeper.n_jobs=3", "epochs=3", "monitor=none",
            "regularizer=none", "augment=none", "model/norm=none", "model.dropout=0.0", "hydra/sweeper/sampler=random")
    first = run_train(*args, "hydra.sweeper.n_trials=3", "optimizer.lr=1e-3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # Three more trials; those with a learning rate too small to learn are pruned at epoch 1 (the rung pruner
    # of stacks, keeping the better half of the six trials' values there).
    second = run_train(*args, "hydra.sweeper.n_trials=6", "optimizer.lr=choice(1e-2,1e-7)",
                       "hydra.sweeper.sampler.seed=1", "search.stacked_pruner.min_resource=1",
                       "search.stacked_pruner.reduction_factor=2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name="st", storage=database_url(tmp_path / "multirun" / "optuna" / "st"))
    assert len(study.trials) == 6
    for trial in study.trials:
        run = read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])
        assert run["launcher"] == "stacked" and run["optuna_trial"] == trial.number
        assert trial.system_attrs[STATUS_ATTR] == run["status"]
        if trial.state == TrialState.COMPLETE:
            assert trial.value == run["final"]["val_acc"] and run["epochs_completed"] == 3
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["optimizer.lr"] == 1e-7 for t in pruned)
    assert all(read_result(tmp_path / t.system_attrs[RUN_DIR_ATTR])["epochs_completed"] == 1 for t in pruned)
    assert "2 training" in second.stdout or "1 training" in second.stdout, "the stack went on without them"
    summary = (tmp_path / "multirun" / "optuna" / "st" / "summary.md").read_text()
    assert "| pruned | pruned |" in summary


class ThreadsSeen(Hook):
    """Records torch's thread count as each epoch's bookkeeping sees it."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def on_epoch_end(self, ctx, epoch, stats, metrics, improved) -> None:
        self.seen[epoch] = torch.get_num_threads()


def test_a_finished_stack_is_freed_when_it_returns_not_at_a_later_garbage_collection(tmp_path):
    """Its tensors (on a GPU: memory an Optuna search's next batch sizes its stacks by) go when it ends."""
    ctxs = [build_context(compose_config("epochs=2", "monitor=none", f"seed={i}", *FAST), tmp_path / str(i))
            for i in range(2)]
    gc.collect()
    gc.disable()
    try:
        fit_stack([Member(str(i), ctx, []) for i, ctx in enumerate(ctxs)], seed=0)
        assert not [o for o in gc.get_objects() if type(o) is Stack]
    finally:
        gc.enable()
    assert all(read_result(ctx.run_dir)["status"] == "completed" for ctx in ctxs)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("engine", ["native", "stacked"])
def test_bookkeeping_runs_on_one_thread_at_evaluation_epochs_and_training_keeps_its_threads(tmp_path, two_threads,
                                                                                         engine):
    ctxs = [build_context(compose_config("epochs=4", "eval_every=2", "monitor=none", f"seed={i}"), tmp_path / str(i))
            for i in range(2 if engine == "stacked" else 1)]
    hooks = [ThreadsSeen() for _ in ctxs]
    if engine == "native":
        fit(ctxs[0], hooks)
    else:
        fit_stack([Member(str(i), ctx, [hook]) for i, (ctx, hook) in enumerate(zip(ctxs, hooks))], seed=0)
    assert [hook.seen for hook in hooks] == [{1: 1, 2: 1, 3: 2, 4: 1}] * len(ctxs)
    assert torch.get_num_threads() == 2
    assert all(read_result(ctx.run_dir)["status"] == "completed" for ctx in ctxs)
