"""Nothing lost silently, and one line (never a traceback) for a bad input, file or setting: cases tried
as a new user and as an adversary would, each on real MNIST."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hreg import checkpoint
from hreg.lifecycle import DIVERGED_LOSS
from hreg.schedule import batch_bounds
from hreg.run import run, train
from hreg.search.study import STATUS_ATTR, database_url
from tests.conftest import QUICK, compose_config, one_error_line, read_result, run_cli, run_train, start_train

FAST_SWEEP = ("epochs=3", "data.train_fraction=0.01", "monitor=none", "regularizer=none", "augment=none",
              "model/norm=none", "model.dropout=0.0")


def start_run(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return start_train(*overrides, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"ended before {path.name} appeared: {proc.stdout.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)


# --- 1. a run directory belongs to one process ---------------------------------------------------


def test_a_second_process_cannot_take_a_run_directory_in_use(tmp_path):
    run_dir = tmp_path / "x"
    first = start_run(run_dir, "epochs=100000", "monitor=none")  # trains until the test stops it
    try:
        wait_for_file(run_dir / "result.json", first)
        config_before = (run_dir / ".hydra" / "config.yaml").read_text()
        second = run_train("epochs=40", "model.hidden=[50]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert "is in use by process" in one_error_line(second)
        resumed = run_cli("hreg-resume", str(run_dir))
        assert "is in use by process" in one_error_line(resumed, "hreg-resume")
        assert (run_dir / ".hydra" / "config.yaml").read_text() == config_before, "the loser wrote nothing"
        first.send_signal(signal.SIGINT)
    finally:
        assert first.wait(timeout=300) == 128 + signal.SIGINT, first.stdout.read()
    result = read_result(run_dir)
    assert result["status"] == "interrupted" and 0 < result["epochs_completed"] < 100000
    assert result["config"]["model"]["hidden"] == [100, 100, 100]
    evaluated = run_cli("hreg-eval", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Traceback" not in (run_dir / "train.log").read_text()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    run_dir = tmp_path / "x"
    proc = start_run(run_dir, "epochs=60", "checkpoint.every=5", "monitor=none")  # killed at epoch 5
    wait_for_file(run_dir / "checkpoints" / checkpoint.LAST, proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "killed while it trained"
    assert read_result(run_dir)["status"] == "running"
    assert (run_dir / ".lock").read_text().startswith(f"process {proc.pid}")
    resumed = run_cli("hreg-resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert read_result(run_dir)["status"] == "completed"


def files(directory: Path) -> dict[Path, bytes]:
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_new_run_refuses_a_directory_that_holds_another_runs_record(tmp_path):
    run_dir, short = tmp_path / "x", (QUICK, "monitor=none")
    assert run_train(*short, "epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    first = files(run_dir)
    again = run_train(*short, "epochs=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert one_error_line(again) == (f"{run_dir} holds a completed run (its result.json): choose another "
                                     f"hydra.run.dir, or give overwrite=true to move it to {run_dir}.previous-1")
    assert files(run_dir) == first, "the refused run wrote nothing"
    moved = run_train(*short, "epochs=2", f"hydra.run.dir={run_dir}", "overwrite=true", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert files(tmp_path / "x.previous-1") == first, "the earlier run moved aside whole"
    assert read_result(run_dir)["epochs_completed"] == 2 and read_result(run_dir)["status"] == "completed"


def test_a_new_multirun_refuses_a_sweep_directory_that_holds_its_jobs(tmp_path):
    sweep_dir, args = tmp_path / "s", ("-m", QUICK, "monitor=none", "epochs=1", "seed=0,1", "~hydra.callbacks.report")
    assert run_train(*args, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path).returncode == 0
    first = files(sweep_dir)
    again = run_train(*args, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert one_error_line(again).startswith(f"{sweep_dir} holds 2 runs of an earlier multirun: ")
    assert files(sweep_dir) == first
    moved = run_train(*args, f"hydra.sweep.dir={sweep_dir}", "overwrite=true", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert files(tmp_path / "s.previous-1") == first
    assert sorted(p.parent.name for p in sweep_dir.glob("*/result.json")) == ["0", "1"]


# --- 2. a sweep in which no trial completes ends cleanly ---------------------------------------------


def sweep(tmp_path: Path, study: str, *args: str) -> subprocess.CompletedProcess:
    return run_train("-m", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={study}", *FAST_SWEEP, *args, cwd=tmp_path)


def test_a_sweep_whose_trials_all_diverge_ends_with_summary_and_report(tmp_path):
    proc = sweep(tmp_path, "blowup", "optimizer.lr=1e9", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "optuna" / "blowup"
    study = optuna.load_study(study_name="blowup", storage=database_url(sweep_dir))
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert [t.system_attrs[STATUS_ATTR] for t in study.trials] == ["diverged"] * 2
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_params"] is None and results["trials"] == {"fail": 2}
    assert (sweep_dir / "summary.md").read_text().startswith("No trial completed (2 trials)")
    report = (sweep_dir / "report.md").read_text()
    assert "2 runs: 2 diverged." in report and "No run finished" in report


def test_a_sweep_of_zero_trials_on_a_new_study_ends_cleanly(tmp_path):
    proc = sweep(tmp_path, "empty", "hydra.sweeper.n_trials=0")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "optuna" / "empty"
    assert yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["best_params"] is None
    assert (sweep_dir / "summary.md").read_text().startswith("No trial completed (0 trials)")
    assert "0 runs: no job ran" in (sweep_dir / "report.md").read_text()


# --- 3. sweep settings are checked before anything runs ---------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (("search.pruner._target_=optuna.pruners.NoSuchPruner",), "search.pruner (_target_=optuna.pruners.NoSuchPruner)"),
        (("search.pruner.n_warmup_steps=-3",), "search.pruner"),
        (("search.pruner=median",), "search.pruner='median': must be an optuna.pruners class"),
        (("search.space.lr.low=-1",), "search.space.lr.low=-1: must be > 0 on a log scale"),
        (("search.space.lr.low=0.1", "search.space.lr.high=0.01"), "search.space.lr.low=0.1: must be <= high"),
        (("search.space.dropout.type=floaty",), "search.space.dropout.type='floaty': must be one of float, int"),
        (("search.space.norm.choices=[]",), "search.space.norm.choices=[]: must be a non-empty list"),
        (("hydra.sweeper.n_trials=-2",), "hydra.sweeper.n_trials=-2"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else "",
)
def test_a_bad_sweep_setting_is_one_line_before_any_trial(tmp_path, args, message):
    proc = sweep(tmp_path, "bad", *args)
    assert message in one_error_line(proc)
    assert not (tmp_path / "multirun" / "optuna" / "bad" / "optuna.db").exists(), "no trial was started"


# --- 5. damaged run files -------------------------------------------------------------------------------


@pytest.fixture
def finished_run(tmp_path) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = compose_config(QUICK, "monitor=none")
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    train(cfg, run_dir)
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory but its lock (which a command takes, and rewrites with its pid)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("damage", ["truncated result", "broken config", "config of another model", "partial config"])
@pytest.mark.parametrize("command", ["hreg-resume", "hreg-eval"])
def test_damaged_run_files_are_one_line_and_nothing_is_overwritten(finished_run, damage, command):
    killed = {**read_result(finished_run), "status": "running"}  # resumable, as after a kill -9
    (finished_run / "result.json").write_text(json.dumps(killed))
    if damage == "truncated result":
        result = finished_run / "result.json"
        result.write_text(json.dumps(killed)[:200])
    elif damage == "broken config":
        (finished_run / ".hydra" / "config.yaml").write_text("epochs: [5\nmodel: {")
    elif damage == "config of another model":
        config = finished_run / ".hydra" / "config.yaml"
        config.write_text(config.read_text().replace("- 100\n  - 100\n  - 100", "- 50"))
    else:
        (finished_run / ".hydra" / "config.yaml").write_text("epochs: 5\nmodel: {hidden: [100]}\n")
    before = snapshot(finished_run)
    proc = run_cli(command, str(finished_run))
    if command == "hreg-eval" and damage == "truncated result":
        assert proc.returncode == 0, proc.stderr  # evaluating reads the checkpoint, not the result file
        before.pop("eval_best.json", None)
        after = snapshot(finished_run)
        after.pop("eval_best.json")
        assert after == before
        return
    message = one_error_line(proc, command)
    assert {"truncated result": "unreadable", "broken config": "damaged",
            "config of another model": "does not fit", "partial config": "not a whole hreg run config"}[damage] in message
    assert snapshot(finished_run) == before


# --- 6. hreg-report on result files of the wrong shape ------------------------------------------------


def test_report_lists_result_files_of_the_wrong_shape_as_failed(finished_run, tmp_path):
    sweep_dir = tmp_path / "sweep"
    good = read_result(finished_run)
    shapes = {
        "list": [1, 2],
        "string": "completed",
        "not a number": {**good, "final": {**good["final"], "val_acc": "high"}},
        "no metrics": {**good, "history": [], "best": None, "final": None},
        "good": good,
    }
    for i, content in enumerate(shapes.values()):
        job = sweep_dir / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={i}\n- regularizer=l{i}\n")
        (job / "result.json").write_text(json.dumps(content))
    proc = run_cli("hreg-report", str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    report = (sweep_dir / "report.md").read_text()
    assert "5 runs: 3 failed, 2 completed." in report
    for i in range(3):
        assert f"- job {i} (regularizer=l{i}): failed: unusable result.json" in report
    assert "- job 3 (regularizer=l3): completed after epoch 5/5 without any evaluation" in report
    assert "job 4" not in report.split("## By configuration")[0], "the good run is in the statistics"


# --- 7. and 8. runs that blow up ---------------------------------------------------------------------------


def test_an_exploded_run_counts_as_diverged_at_the_epoch_it_trained(run_dir):
    value = run(compose_config(QUICK, "monitor=none", "optimizer.lr=1e6"), run_dir)
    result = read_result(run_dir)
    assert math.isnan(value)
    assert result["status"] == "diverged" and result["epochs_completed"] == 1
    assert "blew up" in result["error"] or "nan" in result["error"]
    assert DIVERGED_LOSS == pytest.approx(100 * math.log(10))


def test_a_last_batch_of_one_image_is_skipped_so_batchnorm_trains(run_dir):
    assert batch_bounds(301, 300) == [(0, 300)] and batch_bounds(302, 300) == [(0, 300), (300, 302)]
    assert batch_bounds(3, 1) == [(0, 1), (1, 2), (2, 3)]
    result = train(compose_config(QUICK, "monitor=none", "model/norm=batchnorm", f"data.train_fraction={301 / 60000}"), run_dir)
    assert result.status == "completed" and result.config["data"]["train_fraction"] * 60000 == pytest.approx(301)
