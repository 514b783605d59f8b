"""The search on a pool of stacks: pruning that does not depend on the stack's order, stacks that take
turns without changing each other's runs, and a sweep that keeps its slots full."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hreg.build import build_context
from hreg.engines.stacked.stack import Member, StackRun
from hreg.search.pruners import RungPruner
from hreg.search.study import RUN_DIR_ATTR, database_url
from tests.conftest import compose_config, read_result, run_train, start_train, wait_for

FAST = ("monitor=none", "checkpoint.every=0", "data.train_fraction=0.01", "eval_every=1")


def judged(values: list[float], order: list[int], pruner: optuna.pruners.BasePruner) -> set[int]:
    """Trials that report ``values`` at epoch 50 together (all report, then each is judged, in ``order``)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trials = [study.ask() for _ in values]
    for trial, value in zip(trials, values):
        trial.report(value, 50)
    return {i for i in order if trials[i].should_prune()}


VALUES = [0.91, 0.95, 0.90, 0.97, 0.93, 0.96]


def test_the_rung_pruner_judges_a_lockstep_stack_the_same_in_any_order():
    pruner = RungPruner(min_resource=50, reduction_factor=3, min_kept=1)
    orders = [list(range(6)), list(reversed(range(6))), [3, 0, 5, 1, 4, 2]]
    results = [judged(VALUES, order, pruner) for order in orders]
    assert results[0] == results[1] == results[2] == {0, 1, 2, 4}, "the best third (0.97 and 0.96) goes on"
    # Optuna's own successive halving records a trial's rung value while judging it: the first judged sees
    # only itself and is promoted, so who survives depends on the order (why hreg ships its own rule).
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=50, reduction_factor=3)
    assert len({frozenset(judged(VALUES, order, halving)) for order in orders}) > 1


def test_the_rung_pruner_judges_at_its_rungs_and_compares_with_every_trial_there():
    pruner = RungPruner(min_resource=10, reduction_factor=3, min_kept=1)
    assert [pruner.rungs(step) for step in (9, 10, 29, 30, 95)] == [[], [10], [10], [10, 30], [10, 30, 90]]
    study = optuna.create_study(direction="maximize", pruner=pruner)
    old = study.ask()
    old.report(0.9, 10)
    study.tell(old, 0.9)  # an ended trial's value at the rung still counts
    late = study.ask()
    late.report(0.5, 5)
    assert not late.should_prune(), "before the first rung"
    late.report(0.8, 10)
    assert late.should_prune(), "worse than the only other trial at epoch 10 (2 // 3 -> the best one goes on)"
    # A rung between two evaluations (25, with evaluations every 10 epochs) is judged at the next one (30).
    unaligned = optuna.create_study(direction="maximize", pruner=RungPruner(min_resource=25, min_kept=1))
    first, second = unaligned.ask(), unaligned.ask()
    first.report(0.9, 30)
    second.report(0.1, 20)
    assert not second.should_prune(), "epoch 20 is before the rung"
    second.report(0.2, 30)
    assert second.should_prune(), "its value at rung 25 is its report at 30"
    for wrong in ({"reduction_factor": 1}, {"min_kept": 0}, {"min_resource": 2.5}):
        with pytest.raises(ValueError):
            RungPruner(**wrong)


def test_the_rung_pruner_takes_a_promotion_back_at_the_last_rung_a_trial_passed_only():
    study = optuna.create_study(direction="maximize", pruner=RungPruner(min_resource=10, reduction_factor=3,
                                                                        min_kept=1))
    early = [study.ask() for _ in range(3)]
    for trial, value in zip(early, (0.9, 0.8, 0.7)):
        trial.report(value, 10)
    assert [t.should_prune() for t in early] == [False, True, True], "of 3 at the rung, the best one goes on"
    leader = early[0]
    leader.report(0.95, 20)
    assert not leader.should_prune()
    later = [study.ask() for _ in range(3)]
    for trial, value in zip(later, (0.99, 0.98, 0.97)):
        trial.report(value, 10)
    assert [t.should_prune() for t in later] == [False, False, True], "of 6 at the rung, the best two go on"
    leader.report(0.96, 25)
    assert leader.should_prune(), "no longer among the best two at epoch 10: its slot goes to another trial"

    # Past the next rung (30), a trial is judged there only: a slow start is not held against it later.
    climber = later[1]
    climber.report(0.985, 30)
    assert not climber.should_prune(), "the first trial at epoch 30"
    faster = [study.ask() for _ in range(3)]
    for trial in faster:
        trial.report(0.999, 10)
    climber.report(0.99, 40)
    assert not climber.should_prune(), "fifth of 9 at epoch 10, yet alone at epoch 30: it goes on"


def test_the_rung_pruner_keeps_at_least_min_kept_trials_at_every_rung():
    study = optuna.create_study(direction="maximize", pruner=RungPruner(min_resource=10, reduction_factor=3,
                                                                        min_kept=4))
    stack = [study.ask() for _ in range(6)]
    values = (0.91, 0.95, 0.90, 0.97, 0.93, 0.96)
    for trial, value in zip(stack, values):
        trial.report(value, 10)
    assert [t.should_prune() for t in stack] == [True, False, True, False, False, False], "4, not 6 // 3"
    for trial, value in zip(stack, values):
        trial.report(value, 30)
    assert not any(t.should_prune() for t in stack[1::2]), "4 at epoch 30: all of them go on to the end"


def test_a_stack_trains_the_same_whether_or_not_another_stack_joins_and_takes_turns(tmp_path):
    def member(name: str, seed: int, *overrides: str) -> Member:
        cfg = compose_config("epochs=6", *FAST, f"seed={seed}", "model.dropout=0.2", "augment=noise", *overrides)
        return Member(name, build_context(cfg, tmp_path / name), [])

    alone = StackRun([member("a0", 0), member("a1", 1)], seed=0, own_random_state=True, console=False)
    while not alone.done:
        alone.step()
    alone.close()
    shared = StackRun([member("b0", 0), member("b1", 1)], seed=0, own_random_state=True, console=False)
    joined = None
    while not shared.done:
        shared.step()
        if shared.epoch == 3:  # another stack joins the pool, and both train by turns from here
            joined = StackRun([member("c0", 5, "regularizer=l2")], seed=5, own_random_state=True, console=False)
        if joined is not None and not joined.done:
            joined.step()
    shared.close()
    while not joined.done:
        joined.step()
    joined.close()
    for name, twin in (("a0", "b0"), ("a1", "b1")):
        assert read_result(tmp_path / name)["history"] == read_result(tmp_path / twin)["history"], name
    assert read_result(tmp_path / "c0")["status"] == "completed"


def test_a_search_on_a_pool_keeps_its_slots_full_prunes_from_the_first_stack_and_tells_every_trial(tmp_path):
    args = ("-m", "hydra/sweeper=optuna", "hydra/launcher=stacked", "hydra.launcher.max_members=3",
            "hydra.sweeper.study_name=pool", "hydra.sweeper.n_trials=7", "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=0", "epochs=6", *FAST, "regularizer=none", "augment=none",
            "model/norm=none", "model.dropout=0.0", "optimizer.lr=choice(1e-2,1e-3,1e-7)",
            "search.stacked_pruner.min_resource=2", "search.stacked_pruner.reduction_factor=2",
            "search.stacked_pruner.min_kept=1")
    proc = run_train(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun" / "optuna" / "pool"
    study = optuna.load_study(study_name="pool", storage=database_url(sweep))
    trials = study.trials
    assert len(trials) == 7 and all(t.state.is_finished() for t in trials)
    for trial in trials:
        run = read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])
        assert run["launcher"] == "stacked" and run["optuna_trial"] == trial.number
        if trial.state == TrialState.COMPLETE:
            assert trial.value == run["final"]["val_acc"] and run["epochs_completed"] == 6
        if trial.state == TrialState.PRUNED:
            assert run["status"] == "pruned" and run["epochs_completed"] in (2, 4)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and any(t.number < 3 for t in pruned), "a member of the first stack was pruned"
    # A slot freed by a pruned member was filled at once, by a trial sampled after it ended.
    first_end = min(t.datetime_complete for t in pruned)
    assert any(first_end <= t.datetime_start and t.number >= 3 for t in trials)
    assert "joins the pool" in proc.stdout and proc.stdout.count("joins the pool") >= 2
    results = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in results and "occupancy" in results
    assert (sweep / "summary.md").is_file()


def test_a_pool_sweep_killed_outright_resumes_its_running_trials_from_their_checkpoints(tmp_path):
    args = ("-m", "hydra/sweeper=optuna", "hydra/launcher=stacked", "hydra.launcher.max_members=3",
            "hydra.sweeper.study_name=kill", "hydra.sweeper.n_trials=4", "epochs=12", "monitor=none",
            "checkpoint.every=2", "data.train_fraction=0.01", "eval_every=2", "regularizer=none", "augment=none",
            "model/norm=none", "model.dropout=0.0", "search.stacked_pruner=null")
    sweep = tmp_path / "multirun" / "optuna" / "kill"

    def checkpointed() -> list[optuna.trial.FrozenTrial]:
        if "Study name: kill" not in (tmp_path / "first.log").read_text():  # its tables made: reading cannot race
            return []
        try:
            running = optuna.load_study(study_name="kill", storage=database_url(sweep)).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # no study yet
            return []
        return running if len(running) == 3 and all(len(t.intermediate_values) >= 3 for t in running) else []

    with open(tmp_path / "first.log", "w") as out:
        first = start_train(*args, cwd=tmp_path, output=out)
    try:
        killed = wait_for(checkpointed, "three trials past their checkpoint of epoch 2")
        first.kill()  # SIGKILL: nothing is checkpointed on the way out
        first.wait()
    finally:
        first.kill()
    stopped = {t.number: read_result(tmp_path / t.system_attrs[RUN_DIR_ATTR])["epochs_completed"] for t in killed}

    again = run_train(*args, cwd=tmp_path, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 trials done, 3 to resume, 1 to run" in again.stdout + again.stderr
    trials = optuna.load_study(study_name="kill", storage=database_url(sweep)).trials
    assert len(trials) == 4 and [t.state for t in trials] == [TrialState.COMPLETE] * 4, "no trial asked in their place"
    for trial in killed:
        run_dir = tmp_path / trial.system_attrs[RUN_DIR_ATTR]
        after = next(t for t in trials if t.number == trial.number)
        assert after.system_attrs[RUN_DIR_ATTR] == trial.system_attrs[RUN_DIR_ATTR], "its own directory"
        run = read_result(run_dir)
        (resumed_at,) = run["resumed_at_epoch"]
        assert 3 <= resumed_at <= stopped[trial.number] + 1 and resumed_at % 2 == 1, "from its last checkpoint"
        evaluated = [1, *range(2, 13, 2)]
        assert run["status"] == "completed" and [h["epoch"] for h in run["history"]] == evaluated
        assert sorted(after.intermediate_values) == evaluated and after.value == run["final"]["val_acc"]
