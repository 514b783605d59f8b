"""What a search learned (summary.md's last section), on real Optuna studies whose answer is known."""

from __future__ import annotations

import statistics

import optuna
import pytest

from hreg.search import learned
from hreg.search.summary import write_summary

REGULARIZERS = {"none": 0.90, "l1": 0.93, "l2": 0.95}


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    """30 trials whose value is the regularizer's level plus a little of the learning rate; one pruned."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        regularizer = trial.suggest_categorical("regularizer", list(REGULARIZERS))
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
        if trial.number == 3:
            raise optuna.TrialPruned()
        return REGULARIZERS[regularizer] + lr

    study.optimize(objective, n_trials=30)
    return study


def rows(markdown: str, header: str) -> list[list[str]]:
    lines = markdown.split(header, 1)[1].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")][2:]


def test_the_parameter_that_decides_the_objective_is_the_most_important(study):
    text = learned.importances(study)
    ranked = rows(text, "importance")
    assert [name for name, _ in ranked] == ["regularizer", "optimizer.lr"]
    assert float(ranked[0][1]) > 0.9 and "fANOVA over the 29 completed trials" in text


def test_each_choice_has_its_trials_and_the_best_and_median_of_those_completed(study):
    table = {row[1]: row for row in rows(learned.choices(study), "How each choice fared")}
    assert set(table) == set(REGULARIZERS)
    for choice in REGULARIZERS:
        trials = [t for t in study.trials if t.params["regularizer"] == choice]
        values = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert table[choice][2:] == [str(len(trials)), str(len(values)), f"{max(values):.4g}",
                                     f"{statistics.median(values):.4g}"]


def test_too_few_completed_trials_give_a_line_not_numbers(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert learned.importances(study) == "Parameter importances need at least 5 completed trials; this search has 2."
    assert learned.choices(study) == ""
    write_summary(study, tmp_path)
    assert (tmp_path / "summary.md").read_text().endswith(
        "## What the search learned\n\nParameter importances need at least 5 completed trials; this search has 2.\n")
