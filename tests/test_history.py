"""optimization_history.png draws the whole search: pruned trials too, and the best so far."""

from __future__ import annotations

import optuna
from PIL import Image

from hreg.search.history import best_so_far, last_value, plot_history


def pruned_search(completed: int) -> optuna.Study:
    """10 trials reporting 5 steps each; all but the first ``completed`` are pruned after their second report."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(5):
            trial.report(x * (step + 1) / 5, step)
            if trial.number >= completed and step == 1:
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=10)
    return study


def test_a_pruned_trial_counts_at_the_value_it_was_stopped_with():
    study = pruned_search(completed=2)
    for trial in study.trials:
        expected = trial.value if trial.state.name == "COMPLETE" else trial.intermediate_values[1]
        assert last_value(trial) == expected


def test_the_best_so_far_only_improves_in_the_objectives_direction():
    points = [(3, 0.5), (1, 0.7), (2, 0.6), (4, 0.9)]
    assert best_so_far(points, maximize=True) == ([1, 2, 3, 4], [0.7, 0.7, 0.7, 0.9])
    assert best_so_far(points, maximize=False) == ([1, 2, 3, 4], [0.7, 0.6, 0.5, 0.5])


def test_a_search_with_no_completed_trial_still_draws_its_history(tmp_path):
    """Optuna's own plot drew nothing here: every trial was pruned."""
    for completed in (0, 2):
        path = tmp_path / f"history-{completed}.png"
        assert plot_history(pruned_search(completed), path)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 1000
            low, high = image.convert("L").getextrema()
            assert high - low > 100


def test_a_search_where_no_trial_reported_draws_nothing(tmp_path):
    study = optuna.create_study()
    study.ask()
    assert not plot_history(study, tmp_path / "history.png") and not (tmp_path / "history.png").exists()
