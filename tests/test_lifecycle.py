"""Checkpoints, resume after a kill, clean stops, divergence and early stopping."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import hreg.run
from hreg import checkpoint
from hreg.build import build_context, build_hooks
from hreg.engines import fit
from hreg.hooks import Hook
from hreg.result import RunResult
from hreg.run import run, train
from hreg.saved_run import load_run_config
from tests.conftest import compose_config, events, read_result, run_cli, start_train

RUN = ("epochs=100", "eval_every=10", "checkpoint.every=10", "model.dropout=0.2", "augment=noise",
       "monitor.histograms=5", "lr_schedule=cosine")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return train(compose_config(*RUN), run_dir)


def start_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "run"
    return start_train(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path), run_dir


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.02)


def resume(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("hreg-resume", str(run_dir), *args)


def test_killed_run_resumes_to_the_same_metrics_as_an_uninterrupted_one(tmp_path, uninterrupted):
    proc, run_dir = start_run(tmp_path)
    wait_for(run_dir / "checkpoints" / checkpoint.LAST, proc)
    proc.kill()  # SIGKILL: no chance to save anything
    proc.wait()
    killed = read_result(run_dir)
    assert killed["status"] == "running" and killed["epochs_completed"] < 100
    resumed = resume(run_dir)
    assert resumed.returncode == 0, resumed.stderr
    result = read_result(run_dir)
    assert result["status"] == "completed" and result["resumed_at_epoch"][0] > 1
    assert result["history"] == uninterrupted.history
    assert result["final"] == uninterrupted.final and result["best"] == uninterrupted.best

    acc = events(run_dir)
    steps = [e.step for e in acc.Scalars("loss/val")]
    assert steps == [1] + list(range(10, 101, 10)), "TensorBoard curve without duplicated or missing steps"
    assert [e.step for e in acc.Histograms("weights/fc1")] == [1, 20, 50, 80, 100]  # evaluation epochs
    assert "resuming" in (run_dir / "train.log").read_text()


def test_sigterm_saves_a_checkpoint_at_the_epoch_it_stops(tmp_path, uninterrupted):
    proc, run_dir = start_run(tmp_path)
    wait_for(run_dir / "result.json", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "hreg-resume" in proc.stdout.read()
    result = read_result(run_dir)
    assert result["status"] == "interrupted" and "SIGTERM" in result["error"]
    saved = checkpoint.load(run_dir / "checkpoints" / checkpoint.LAST)
    assert saved["epoch"] == result["epochs_completed"]
    assert resume(run_dir).returncode == 0
    resumed = read_result(run_dir)
    assert resumed["final"] == uninterrupted.final
    assert resumed["status"] == "completed" and "error" not in resumed and "exit_code" not in resumed


def saved_run(tmp_path: Path, *overrides: str) -> tuple[Path, dict]:
    """A finished run in a directory laid out as train.py lays it out."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = compose_config(*overrides, "monitor=none")
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir, train(cfg, run_dir)


def test_corrupt_or_partial_checkpoint_is_refused(tmp_path):
    run_dir, _ = saved_run(tmp_path, "epochs=3")
    path = run_dir / "checkpoints" / checkpoint.LAST
    good = path.read_bytes()
    checkpoint.load(path)
    for broken in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b"PK\x03\x04 not ours"):
        path.write_bytes(broken)
        with pytest.raises(checkpoint.CheckpointError, match="not loaded"):
            checkpoint.load(path)
    killed = {**read_result(run_dir), "status": "running"}  # pretend it was killed
    (run_dir / "result.json").write_text(json.dumps(killed))
    proc = resume(run_dir)
    assert proc.returncode == 2 and "not loaded" in proc.stderr and "Traceback" not in proc.stderr


def test_a_gpu_runs_checkpoint_resumes_on_the_cpu_with_the_configs_kernels_and_without_touching_cuda(
        tmp_path, monkeypatch):
    """A graphed run on a GPU writes its optimizer as it stepped there (capturable, not fused) and its GPU's
    generator beside the CPU's. Resumed by a CPU run on a machine with GPUs, it steps with its config's fused
    kernel and neither reads nor sets a GPU's generator (that started CUDA for a CPU run, and failed where
    the machine had fewer GPUs than the writer): it ends as the run that was never stopped."""
    overrides = ("epochs=6", "eval_every=2", "checkpoint.every=4", "monitor=none")
    at_four: list[dict] = []
    save = checkpoint.save

    def keep_epoch_four(path: Path, state: dict) -> None:
        if path.name == checkpoint.LAST and state["epoch"] == 4:
            at_four.append(checkpoint.copied(state))
        save(path, state)

    monkeypatch.setattr(checkpoint, "save", keep_epoch_four)
    uninterrupted = train(compose_config(*overrides), tmp_path / "uninterrupted")
    state = at_four[0]
    assert "cuda" not in state["rng"], "a CPU run keeps the CPU's generator only"
    for group in state["optimizer"]["param_groups"]:
        group.update(capturable=True, fused=False)  # as a graphed run on a GPU stepped
    state["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)

    def no_gpu(*args, **kwargs):
        raise AssertionError("a CPU run touched a GPU's generator")

    ctx = build_context(compose_config(*overrides), tmp_path / "resumed")
    with monkeypatch.context() as gpus:  # not around training: torch's optimizers would look for the GPUs
        gpus.setattr(torch.cuda, "is_available", lambda: True)
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            gpus.setattr(torch.cuda, name, no_gpu)
        first_epoch = checkpoint.restore(ctx, state)
        assert "cuda" not in checkpoint.capture(ctx, 4)["rng"]
    assert first_epoch == 5
    assert [(g["fused"], g["capturable"]) for g in ctx.optimizer.param_groups] == [(True, False)]
    fit(ctx, build_hooks(ctx), first_epoch)
    assert ctx.result.history == uninterrupted.history


def test_only_last_and_best_checkpoints_are_kept(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = train(compose_config("epochs=40", "eval_every=5", "checkpoint.every=10", "monitor=none"), run_dir)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert checkpoint.load(run_dir / "checkpoints" / "best.pt")["epoch"] == result.best["epoch"]
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 40


def test_best_is_written_with_each_last_checkpoint_and_at_the_end_holding_the_best_so_far(run_dir, monkeypatch):
    """best.pt is kept in memory at each improvement and written before each last.pt (and at the end)."""
    writes: list[tuple[str, int, int]] = []  # (file, epoch of the state written, epoch the run has reached)
    weights: dict[int, dict[str, torch.Tensor]] = {}  # the model's weights at the end of each epoch
    save = checkpoint.save

    def spy(path: Path, state: dict) -> None:
        writes.append((path.name, state["epoch"], max(weights)))
        save(path, state)

    class Clock(Hook):
        def on_epoch_end(self, ctx, epoch, stats, metrics, improved):
            weights[epoch] = {k: v.clone() for k, v in ctx.model.state_dict().items()}

    build_hooks = hreg.run.build_hooks
    monkeypatch.setattr(checkpoint, "save", spy)
    monkeypatch.setattr(hreg.run, "build_hooks", lambda ctx: [Clock(), *build_hooks(ctx)])
    result = train(compose_config("epochs=25", "eval_every=1", "checkpoint.every=10", "monitor=none"), run_dir)

    accuracies = [m["val_acc"] for m in result.history]
    improved = [m["epoch"] for i, m in enumerate(result.history) if i == 0 or m["val_acc"] > max(accuracies[:i])]
    assert len(improved) > 10, "a run that improves at most evaluations"
    expected = []
    for since, epoch in ((0, 10), (10, 20), (20, 25)):  # each last.pt (at 10, 20) and the end (25)
        if any(since < e <= epoch for e in improved):
            expected.append(("best.pt", max(e for e in improved if e <= epoch), epoch))
        expected.append(("last.pt", epoch, epoch))
    assert writes == expected
    best = checkpoint.load(run_dir / "checkpoints" / checkpoint.BEST)
    assert best["epoch"] == result.best["epoch"] and best["result"]["best"] == result.best
    assert best["result"]["history"] == result.history[: accuracies.index(result.best["val_acc"]) + 1], \
        "the record as it was at the best epoch"
    held = weights[best["epoch"]]
    assert best["model"].keys() == held.keys() and all(torch.equal(best["model"][k], held[k]) for k in held), \
        "the weights as they were at the best epoch"
    other = weights[2 if best["epoch"] == 1 else best["epoch"] - 1]
    assert not all(torch.equal(held[k], other[k]) for k in held), "(weights that change from epoch to epoch)"


class FailsAtEpoch3(Hook):
    def on_epoch_end(self, ctx, epoch, stats, metrics, improved):
        if epoch == 3:
            raise RuntimeError("broken at epoch 3")


class FailsAtTheEnd(Hook):
    """A hook whose ``on_end`` fails, before the checkpoints' (as TensorBoard's comes before them)."""

    def on_end(self, ctx):
        raise OSError("broken at the end")


@pytest.mark.parametrize("how", ["diverged", "failed"])
def test_a_run_that_fails_keeps_its_best_state(run_dir, monkeypatch, how):
    if how == "diverged":  # SGD with lr 0.5 improves at epoch 1 and diverges in epoch 2
        result = train(compose_config("epochs=50", "eval_every=1", "optimizer=sgd", "optimizer.lr=0.5",
                                      "monitor=none"), run_dir)
    else:  # evaluated at epochs 1 to 3, then a hook fails the run; another one's on_end fails too
        build_hooks = hreg.run.build_hooks
        monkeypatch.setattr(hreg.run, "build_hooks", lambda ctx: [FailsAtTheEnd(), *build_hooks(ctx), FailsAtEpoch3()])
        with pytest.raises(OSError, match="broken at the end"):
            train(compose_config("epochs=50", "eval_every=1", "monitor=none"), run_dir)
        result = RunResult.load(run_dir)
        assert "broken at epoch 3" in result.error
    assert result.status == how and result.best["epoch"] <= 3
    assert not (run_dir / "checkpoints" / checkpoint.LAST).exists(), "no last.pt: best.pt was still pending"
    assert checkpoint.load(run_dir / "checkpoints" / checkpoint.BEST)["epoch"] == result.best["epoch"]


def test_saved_run_is_evaluated_without_training(tmp_path):
    run_dir, result = saved_run(tmp_path, "epochs=15", "eval_every=5")
    saved = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    proc = run_cli("hreg-eval", str(run_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert f"test acc {result.best['test_acc']:.4f}" in proc.stdout
    evaluation = json.loads((run_dir / "eval_best.json").read_text())
    assert evaluation["epoch"] == result.best["epoch"] and evaluation["test_acc"] == result.best["test_acc"]
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == saved, "nothing trained"


def test_a_run_saved_before_lr_schedule_existed_is_read_at_a_constant_rate(tmp_path):
    run_dir, result = saved_run(tmp_path, "epochs=3")
    config_file = run_dir / ".hydra" / "config.yaml"
    old = OmegaConf.load(config_file)
    del old["lr_schedule"]
    config_file.write_text(OmegaConf.to_yaml(old))
    assert load_run_config(run_dir, None).lr_schedule == "constant"
    proc = run_cli("hreg-eval", str(run_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert f"test acc {result.best['test_acc']:.4f}" in proc.stdout


def test_nan_loss_stops_the_run_with_status_diverged(run_dir):
    # SGD with lr 0.5 is evaluated after epoch 1, then its loss becomes NaN in epoch 2.
    cfg = compose_config("epochs=50", "eval_every=1", "optimizer=sgd", "optimizer.lr=0.5", "monitor=none")
    value = run(cfg, run_dir)
    result = read_result(run_dir)
    assert result["status"] == "diverged" and "nan" in result["error"]
    assert math.isfinite(result["final"]["val_acc"])  # a good evaluation came before the divergence...
    assert math.isnan(value), "...yet a sweeper never takes a diverged run for a good one"
    assert result["epochs_completed"] < 50
    assert read_result(run_dir)["status"] == "diverged"
    assert not (run_dir / "checkpoints" / checkpoint.LAST).exists(), "garbage is not checkpointed"


def test_early_stopping_is_off_by_default_and_recorded_when_on(run_dir):
    assert compose_config().early_stopping.patience is None
    cfg = compose_config("epochs=300", "eval_every=1", "early_stopping.patience=3", "objective=val_loss", "monitor=none")
    result = train(cfg, run_dir)
    assert result.status == "early_stopped" and result.epochs_completed < 300
    record = result.extras["early_stopping"]
    assert record["stopped_epoch"] - record["best_epoch"] == 3 == record["patience"]
    assert checkpoint.load(run_dir / "checkpoints" / checkpoint.LAST)["epoch"] == record["stopped_epoch"]
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    proc = resume(run_dir)
    assert proc.returncode == 0 and "has ended (early_stopped)" in proc.stdout
    assert read_result(run_dir) == json.loads(json.dumps(result.to_dict())), "an ended run is not trained further"
