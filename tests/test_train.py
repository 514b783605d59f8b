"""End to end: a short real run, reproducibility, and what a user sees on a mistake."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

from hreg.cli import exit_on_error
from hreg.schedule import is_eval_epoch
from hreg.progress import Progress
from hreg.run import run, train
from tests.conftest import QUICK, compose_config, read_result, run_train


def test_short_default_run_learns(run_dir):
    result = train(compose_config("epochs=20", "monitor=none"), run_dir)
    assert result.status == "completed" and result.epochs_completed == 20
    assert result.final["val_acc"] >= 0.90  # 20 epochs on 3000 images: about 0.915 measured
    assert result.final["train_acc"] > result.final["val_acc"]  # 5% of MNIST overfits
    assert [h["epoch"] for h in result.history] == [1, 10, 20]
    assert read_result(run_dir) == json.loads(json.dumps(result.to_dict()))


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path):
    overrides = ("epochs=3", "monitor=none", "model.dropout=0.2", "augment=noise_affine", "model/norm=batchnorm")
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        runs.append(train(compose_config(*overrides, f"seed={seed}"), tmp_path / name).history)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_task_function_returns_the_validation_objective(tmp_path):
    assert run(compose_config(QUICK, "monitor=none"), tmp_path / "a") == read_result(tmp_path / "a")["final"]["val_acc"]
    loss = run(compose_config(QUICK, "monitor=none", "objective=val_loss"), tmp_path / "b")
    assert loss == read_result(tmp_path / "b")["final"]["val_loss"]


BAD_INPUTS = [
    ("regularizer=l1", "regularizer.lam=-1", "regularizer.lam=-1", ">= 0"),
    ("model.dropout=1.0", None, "model.dropout=1.0", "[0, 1)"),
    ("model.dropout=-0.1", None, "model.dropout=-0.1", "[0, 1)"),
    ("optimizer.lr=0", None, "optimizer.lr=0", "> 0"),
    ("data.batch_size=0", None, "data.batch_size=0", ">= 1"),
    ("epochs=0", None, "epochs=0", ">= 1"),
    ("threads=0", None, "threads=0", "auto or an integer in [1, 4096]"),
    ("threads=many", None, "threads='many'", "auto or an integer in [1, 4096]"),
    ("data.train_fraction=0", None, "data.train_fraction=0", "(0, 1]"),
    ("data.train_fraction=1.5", None, "data.train_fraction=1.5", "(0, 1]"),
    ("augment=noise", "augment.noise_sigma=-1", "augment.noise_sigma=-1", ">= 0"),
    ("objective=test_acc", None, "objective='test_acc'", "val_acc, val_loss"),
    ("monitor.histograms=1", None, "monitor.histograms=1", ">= 2"),
    ("engine=lightning", "engine.trainer.precision=17", "engine.trainer", "Allowed precision values"),
    # Values that used to pass validation and crash later:
    ("seed=-1", None, "seed=-1", "an integer in [0, 4294967295]"),
    ("data.seed=-3", None, "data.seed=-3", "an integer in [0, 4294967295]"),
    ("data.train_fraction=1e-6", None, "data.train_fraction=1e-06", "at least one training image"),
    ("model.hidden=[]", None, "model.hidden=[]", "non-empty"),
    ("model/norm=batchnorm", "data.batch_size=1", "data.batch_size=1", "BatchNorm cannot train on a batch of one"),
    ("model/norm=batchnorm", "data.train_fraction=1e-5", "data.batch_size=300", "BatchNorm cannot train on a batch of one"),
]


@pytest.mark.parametrize("first, second, key_value, allowed", BAD_INPUTS)
def test_bad_value_exits_with_one_line_naming_key_value_and_allowed(first, second, key_value, allowed, run_dir, capsys):
    cfg = compose_config(*[o for o in (first, second) if o])
    with pytest.raises(SystemExit) as exit_info, exit_on_error("hreg"):
        run(cfg, run_dir)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"hreg: error: {key_value}") and allowed in err
    assert not (run_dir / "result.json").exists(), "nothing was trained"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_a_user_error(run_dir, capsys):
    with pytest.raises(SystemExit), exit_on_error("hreg"):
        run(compose_config("device=cuda"), run_dir)
    assert "no CUDA GPU" in capsys.readouterr().err


def test_train_py_runs_end_to_end_with_overrides(tmp_path):
    proc = run_train(
        "epochs=4", "regularizer=l2", "regularizer.lam=1e-4", "model/norm=batchnorm", "model.dropout=0.1",
        "augment=affine", "optimizer=sgd", "optimizer.lr=0.05", "device=cpu", "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["regularizer"]["kind"] == "l2" and config["model"]["dropout"] == 0.1
    assert config["optimizer"]["_target_"] == "torch.optim.SGD"
    result = read_result(run_dir)
    assert result["status"] == "completed" and result["device"] == "cpu"
    assert result["final"]["penalty"] > 0
    log = (run_dir / "train.log").read_text()
    assert "completed: best val acc" in log and str(run_dir.resolve()) in log
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_unknown_group_option_exits_with_the_allowed_options(tmp_path):
    proc = run_train("regularizer=l3", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'regularizer/l3'" in proc.stderr and "l1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_value_from_the_command_line_is_one_line_without_traceback(tmp_path):
    proc = run_train("regularizer=l1", "regularizer.lam=-0.5", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "hreg: error: regularizer.lam=-0.5: must be a number >= 0"
    assert "Traceback" not in proc.stderr


def test_missing_mnist_says_how_to_fix_it(tmp_path):
    proc = run_train("epochs=1", "hydra.run.dir=run", cwd=tmp_path, env={"DATAMAESTRO_DIR": str(tmp_path / "empty")})
    assert proc.returncode == 2
    assert "MNIST file missing" in proc.stderr and "hreg-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("eval_every", [10, 7, 3])
def test_about_ten_progress_lines_whatever_the_evaluation_interval(eval_every, caplog):
    progress = Progress(1000)
    metrics = {"train_loss": 0.1, "train_acc": 0.9, "val_loss": 0.2, "val_acc": 0.8}
    with caplog.at_level(logging.INFO, logger="hreg"):
        for epoch in range(1, 1001):
            progress.epoch_done(epoch, metrics if is_eval_epoch(epoch, 1000, eval_every) else None)
    progress.close()
    logged = [int(r.getMessage().split()[1].split("/")[0]) for r in caplog.records]
    assert logged[0] == 1 and logged[-1] == 1000 and 10 <= len(logged) <= 12
    assert all(b - a >= 50 for a, b in zip(logged[1:-1], logged[2:])), logged
