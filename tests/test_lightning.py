"""engine=lightning: the same configuration trained by Lightning's Trainer, on real MNIST."""

from __future__ import annotations

import signal
import statistics
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hreg.build import build_context, build_hooks
from hreg.engines import fit
from hreg.engines.lightning import LifecycleCallback, MNISTDataModule, build_trainer
from hreg.lifecycle import Lifecycle
from hreg.result import Status
from hreg.schedule import is_eval_epoch
from hreg.search.study import database_url
from tests.conftest import QUICK, compose_config, events, one_error_line, read_result, run_train, start_train

VARIANTS = {"none": [], "l2": ["regularizer=l2", "regularizer.lam=1e-3"], "dropout": ["model.dropout=0.3"],
            "batchnorm": ["model/norm=batchnorm"], "cosine": ["lr_schedule=cosine", "optimizer.lr=3e-3"]}
SEEDS = (0, 1, 2)
PARITY = ("epochs=20", "eval_every=20", "monitor=none", "checkpoint.every=0")


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory) -> dict[str, dict[str, list[float]]]:
    """Final validation accuracy of each variant and seed, trained by each engine (same builders, same splits)."""
    out: dict[str, dict[str, list[float]]] = {}
    for engine in ("native", "lightning"):
        for variant, overrides in VARIANTS.items():
            for seed in SEEDS:
                cfg = compose_config(*PARITY, f"engine={engine}", f"seed={seed}", *overrides)
                ctx = build_context(cfg, tmp_path_factory.mktemp(f"{engine}-{variant}-{seed}"))
                assert fit(ctx, build_hooks(ctx)) == Status.COMPLETED
                out.setdefault(engine, {}).setdefault(variant, []).append(ctx.result.final["val_acc"])
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lightning_reaches_the_native_loops_validation_accuracy_on_average_over_seeds(both_engines, variant):
    native, lightning = (statistics.mean(both_engines[e][variant]) for e in ("native", "lightning"))
    assert native > 0.85 and lightning > 0.85
    assert abs(native - lightning) < 0.005, (native, lightning)


def test_a_lightning_run_has_the_native_runs_record_events_and_checkpoints(tmp_path):
    native, lightning = tmp_path / "native", tmp_path / "lightning"
    for run_dir, engine in ((native, "native"), (lightning, "lightning")):
        proc = run_train(QUICK, f"engine={engine}", "eval_every=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    expected, got = read_result(native), read_result(lightning)
    assert got["engine"] == "lightning" and "engine" not in expected
    assert got["status"] == "completed" and got["epochs_completed"] == 5
    assert set(got) - {"engine"} == set(expected)
    assert [h["epoch"] for h in got["history"]] == [h["epoch"] for h in expected["history"]] == [1, 2, 4, 5]
    assert got["final"]["val_acc"] > 0.8
    native_tags, lightning_tags = events(native).Tags(), events(lightning).Tags()
    for kind in ("scalars", "histograms"):
        assert set(lightning_tags[kind]) == set(native_tags[kind]), kind
    assert [e.step for e in events(lightning).Scalars("accuracy/val")] == [1, 2, 4, 5]
    assert {p.name for p in (lightning / "checkpoints").iterdir()} == {"last.ckpt", "best.ckpt"}
    # Lightning validated at epochs 2 and 4 only; its last.ckpt holds the last epoch all the same (0-based).
    assert torch.load(lightning / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 4


def test_lightnings_own_settings_pass_through(tmp_path):
    """engine.trainer.* reaches the Trainer: bf16 mixed precision trains (on the CPU too) and still learns."""
    ctx = build_context(compose_config(QUICK, "engine=lightning", "engine.trainer.precision=bf16-mixed", "monitor=none",
                                       "+engine.trainer.enable_progress_bar=false"), tmp_path)
    trainer, _ = build_trainer(ctx, LifecycleCallback(Lifecycle(ctx, []), MNISTDataModule(ctx.data, 300, 0)))
    assert trainer.precision == "bf16-mixed" and trainer.progress_bar_callback is None
    assert fit(ctx, build_hooks(ctx)) == Status.COMPLETED
    assert ctx.result.final["val_acc"] > 0.8


def test_lightning_stops_early_with_its_own_callback(tmp_path):
    proc = run_train("epochs=40", "eval_every=1", "early_stopping.patience=1", "optimizer.lr=0.05", "engine=lightning",
                     "monitor=none", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(tmp_path / "run")
    assert result["status"] == "early_stopped" and result["epochs_completed"] < 40


def test_a_diverging_lightning_run_is_marked_diverged(tmp_path):
    proc = run_train(QUICK, "engine=lightning", "optimizer.lr=1e6", "monitor=none", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    result = read_result(tmp_path / "run")
    assert result["status"] == "diverged" and result["epochs_completed"] == 1, proc.stderr[-2000:]


def test_an_optuna_search_with_lightning_reports_to_its_trials_and_prunes(tmp_path):
    """As tests/test_sweep.py's pruning test: a trial that learns, then one that cannot, below the median."""
    fixed = ("-m", "hydra/sweeper=optuna", "hydra.sweeper.study_name=lit", "engine=lightning", "epochs=3",
             "data.train_fraction=0.01", "monitor=none", "search.pruner.n_startup_trials=1",
             "search.pruner.n_warmup_steps=0", "regularizer=none", "augment=none", "model/norm=none",
             "model.dropout=0.0")
    for lr, trials in (("1e-3", 1), ("1e-7", 2)):
        proc = run_train(*fixed, f"optimizer.lr={lr}", f"hydra.sweeper.n_trials={trials}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="lit", storage=database_url(tmp_path / "multirun" / "optuna" / "lit"))
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and list(good.intermediate_values) == [1, 3]
    assert bad.state == TrialState.PRUNED and list(bad.intermediate_values) == [1]


def test_two_cpu_processes_with_ddp_train_one_run_and_keep_one_record(tmp_path):
    """engine.trainer.devices=2 strategy=ddp: Lightning starts a second process by running the command again;
    the first keeps the directory, the record and TensorBoard, the second writes only its own log."""
    run_dir = tmp_path / "run"
    proc = run_train(QUICK, "engine=lightning", "engine.trainer.devices=2", "engine.trainer.strategy=ddp",
                     "device=cpu", f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(run_dir)
    assert result["status"] == "completed" and result["epochs_completed"] == 5 and result["engine"] == "lightning"
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4, 5]
    assert result["final"]["val_acc"] > 0.8
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and len(list(run_dir.glob("events.out.tfevents.*"))) >= 1
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert "Traceback" not in proc.stderr


def test_ddp_in_a_multirun_is_refused_with_one_line(tmp_path):
    proc = run_train("-m", QUICK, "engine=lightning", "engine.trainer.devices=2", "device=cpu", "monitor=none",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert "cannot; run such a job on its own" in one_error_line(proc)


def test_ctrl_c_ends_a_lightning_run_cleanly_with_its_record(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train("epochs=200", "eval_every=7", "engine=lightning", "monitor=none", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / "result.json").exists():  # written at the first evaluation
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 128 + signal.SIGINT
    result = read_result(run_dir)
    assert result["status"] == "interrupted" and "SIGINT" in result["error"] and result["epochs_completed"] < 200
    completed = result["epochs_completed"]
    assert result["history"][-1]["epoch"] == max(e for e in range(1, completed + 1) if is_eval_epoch(e, 200, 7))
    assert "Lightning checkpoints" in proc.stdout.read()
    # Lightning validates every 7 epochs; its last.ckpt still holds the epoch the run stopped at (10 batches each).
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 10 * completed
