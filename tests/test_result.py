"""The run record: its statuses, its bookkeeping, and result files written before it existed."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from hreg.report import write_report
from hreg.report.runs import load_run
from hreg.result import ResultError, RunResult, Status
from tests.conftest import REPO

#: result.json as the code before the typed record wrote it (a 3-epoch L1 run with TensorBoard and early stopping).
OLD_RESULT = REPO / "tests" / "data" / "result_written_before_run_record.json"


def test_statuses_answer_what_readers_ask():
    over = {s for s in Status if s.is_over}
    assert over == {Status.COMPLETED, Status.EARLY_STOPPED, Status.PRUNED, Status.DIVERGED}
    assert {s for s in Status if s.resumable} == set(Status) - over
    assert {s for s in Status if s.clean_end} == {Status.COMPLETED, Status.INTERRUPTED, Status.EARLY_STOPPED}
    assert {s for s in Status if s.finished} == {Status.COMPLETED, Status.EARLY_STOPPED}
    assert {s: s.trial_state for s in (Status.COMPLETED, Status.PRUNED, Status.DIVERGED, Status.LOST)} == {
        Status.COMPLETED: "COMPLETE", Status.PRUNED: "PRUNED", Status.DIVERGED: "FAIL", Status.LOST: "FAIL",
    }
    assert Status.COMPLETED == "completed" and json.dumps(Status.PRUNED) == '"pruned"'


def metrics(epoch: int, val_acc: float, val_loss: float) -> dict[str, float]:
    return {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss}


@pytest.mark.parametrize("objective, improvements", [("val_acc", [True, True, False, False]),
                                                     ("val_loss", [True, False, True, False])])
def test_record_says_whether_an_evaluation_improved_on_the_objective(objective, improvements):
    result = RunResult(objective=objective, config={}, epochs=4)
    evaluations = [metrics(1, 0.5, 1.0), metrics(2, 0.6, 1.1), metrics(3, 0.6, 0.9), metrics(4, math.nan, math.nan)]
    assert [result.record(m) for m in evaluations] == improvements
    assert result.final == evaluations[-1] and result.history == evaluations
    assert result.best == evaluations[[i for i, better in enumerate(improvements) if better][-1]]


def test_objective_value_is_nan_for_a_diverged_run_whatever_it_reached_before():
    result = RunResult(objective="val_acc", config={}, epochs=4)
    result.record(metrics(1, 0.9, 0.3))
    assert result.objective_value() == 0.9
    result.finish(Status.DIVERGED, "training loss is nan")
    assert math.isnan(result.objective_value())


def test_extras_go_through_one_method_and_cannot_shadow_a_field():
    result = RunResult(objective="val_acc", config={}, epochs=1)
    result.set_extra("optuna_trial", 3)
    assert result.to_dict()["optuna_trial"] == 3
    with pytest.raises(KeyError):
        result.set_extra("status", "completed")


def test_a_result_file_written_before_the_run_record_loads_and_round_trips(tmp_path):
    data = json.loads(OLD_RESULT.read_text())
    shutil.copy(OLD_RESULT, tmp_path / "result.json")
    result = RunResult.load(tmp_path)
    assert result.status == Status.COMPLETED and result.epochs_completed == 3
    assert result.extras == {"random_model_entropy": data["random_model_entropy"]}
    assert result.weights == data["weights"] and result.best == data["best"]
    assert result.to_dict() == data  # same keys, same values: the schema did not change
    result.save(tmp_path)
    assert json.loads((tmp_path / "result.json").read_text()) == data


def test_a_result_file_written_before_the_run_record_reports(tmp_path):
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- regularizer=l1\n- epochs=3\n")
    shutil.copy(OLD_RESULT, job / "result.json")
    assert load_run(job).finished
    report = write_report(tmp_path / "sweep").read_text()
    assert "1 run: 1 completed." in report
    assert f"{100 * json.loads(OLD_RESULT.read_text())['final']['test_acc']:.2f}" in report


@pytest.mark.parametrize(
    "content, why",
    [
        ('{"status": "completed"', "unreadable"),
        ("[1, 2]", "a JSON list"),
        ('"completed"', "a JSON str"),
        ('{"status": "completed"}', "no objective"),
    ],
)
def test_a_damaged_result_file_is_one_error_line(tmp_path: Path, content, why):
    (tmp_path / "result.json").write_text(content)
    with pytest.raises(ResultError, match=why) as error:
        RunResult.load(tmp_path)
    assert "\n" not in str(error.value)


def test_a_metric_that_is_not_a_number_is_refused(tmp_path):
    data = json.loads(OLD_RESULT.read_text())
    data["final"]["val_acc"] = "high"
    (tmp_path / "result.json").write_text(json.dumps(data))
    with pytest.raises(ResultError, match="final"):
        RunResult.load(tmp_path)


def test_every_save_reads_back_as_the_record_nan_metrics_extras_and_a_replaced_history_included(tmp_path):
    result = RunResult(objective="val_acc", config={"model": {"hidden": [100, 100, 100]}, "seed": 0}, epochs=30)
    result.set_extra("random_model_entropy", 2.3)

    def reloaded() -> RunResult:
        result.save(tmp_path)
        text = (tmp_path / "result.json").read_text()
        assert text.startswith('{\n  "objective": "val_acc"')  # indented, fields in order: readable by eye
        back = RunResult.load(tmp_path)
        assert json.dumps(back.to_dict(), allow_nan=True) == json.dumps(result.to_dict(), allow_nan=True)
        return back

    reloaded()  # no evaluation yet
    for epoch in range(1, 8):
        metrics = {"epoch": epoch, "val_acc": 0.1 * epoch, "val_loss": math.nan if epoch == 3 else 1 / epoch}
        result.record(metrics)
        reloaded()
        metrics["penalty"] = 0.01 * epoch  # a hook may add to the newest evaluation after its save
    assert math.isnan(reloaded().history[2]["val_loss"])
    result.history = [{**m, "val_acc": m["val_acc"] / 2} for m in result.history[:4]]  # a checkpoint's record
    assert reloaded().history[3] == {"epoch": 4, "val_acc": 0.2, "val_loss": 0.25, "penalty": 0.04}
    result.finish(Status.DIVERGED, "loss is nan")
    back = reloaded()
    assert (back.status, back.error, back.extras) == (Status.DIVERGED, "loss is nan", {"random_model_entropy": 2.3})
