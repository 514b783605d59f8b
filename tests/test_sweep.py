"""The Optuna search (`train.py -m hydra/sweeper=optuna`): tiny real sweeps on MNIST.

Each sweep runs a few trials of 3 epochs on 1% of the training set, from a
temporary directory, so its multirun/ and database stay out of the repository.
"""

from __future__ import annotations

import csv
import logging
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write

from hreg import checkpoint
from hreg.search.space import suggest
from hreg.search.pool import on_pool
from hreg.search.study import FINAL_ATTR, RUN_DIR_ATTR, STATUS_ATTR, database_url
from hreg.search.trial import TrialReporter
from hreg.stops import Lost
from hreg.search.summary import main as hreg_study
from tests.conftest import compose_config, one_error_line, read_result, run_train

FAST = ("epochs=3", "data.train_fraction=0.01", "monitor=none")
#: Every search-space entry fixed but the learning rate: trials differ only where a test wants.
FIXED = ("regularizer=none", "augment=none", "model/norm=none", "model.dropout=0.0", "lr_schedule=cosine")
DEPENDENT = {
    "regularizer.lam": ("regularizer", {"l1", "l2"}),
    "augment.noise_sigma": ("augment", {"noise", "noise_affine"}),
    "augment.degrees": ("augment", {"affine", "noise_affine", "elastic_affine"}),
    "augment.translate": ("augment", {"affine", "noise_affine", "elastic_affine"}),
    "augment.elastic_alpha": ("augment", {"elastic", "elastic_affine"}),
    "augment.elastic_sigma": ("augment", {"elastic", "elastic_affine"}),
}


def sweep(tmp_path, study: str, *args: str, expect_rc: int = 0):
    proc = run_train("-m", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={study}", *FAST, *args, cwd=tmp_path)
    assert proc.returncode == expect_rc, proc.stderr[-4000:]
    return proc


def load(tmp_path, study: str):
    sweep_dir = tmp_path / "multirun" / "optuna" / study
    return sweep_dir, optuna.load_study(study_name=study, storage=database_url(sweep_dir))


def assert_dependent_parameters_apply(params: dict, fixed: dict | None = None) -> None:
    values = {**(fixed or {}), **params}
    for child, (parent, enabling) in DEPENDENT.items():
        assert (child in params) == (values[parent] in enabling), params


def test_dependent_parameters_are_sampled_exactly_where_they_apply():
    cfg = compose_config("hydra/sweeper=optuna", hydra=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        suggest(cfg, trial)
        assert_dependent_parameters_apply(trial.params)
    params = [t.params for t in study.trials]
    assert {p["regularizer"] for p in params} == {"none", "l1", "l2"}
    assert {p["augment"] for p in params} == {"none", "noise", "affine", "noise_affine", "elastic", "elastic_affine"}
    # A parent fixed on the command line (a user attribute, as the plugin sets it) decides for its children.
    trial = study.ask()
    trial.set_user_attr("regularizer", "l2")
    suggest(cfg, trial)
    assert "regularizer" not in trial.params and "regularizer.lam" in trial.params


def test_results_and_summary_agree_with_the_study_and_a_rerun_resumes(tmp_path):
    sweep(tmp_path, "t", "hydra.sweeper.n_trials=2")
    sweep_dir, study = load(tmp_path, "t")
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == study.best_value
    assert results["best_params"] == study.best_trial.params
    for trial in trials:
        assert_dependent_parameters_apply(trial.params)
        run = read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])
        assert run["optuna_trial"] == trial.number and run["status"] == "completed"
        assert run.get("launcher") == "stacked", "no launcher named: the search trains on the pool"
        assert trial.value == run["final"]["val_acc"]  # the objective is validation accuracy...
        assert trial.system_attrs[FINAL_ATTR]["test_acc"] == run["final"]["test_acc"]  # ...test is recorded
        assert run["config"]["optimizer"]["lr"] == trial.params["optimizer.lr"]

    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == sorted(range(2), key=lambda n: -trials[n].value)  # best first
    for row in rows:
        trial = trials[int(row["trial"])]
        assert row["state"] == "complete" and float(row["value"]) == trial.value
        assert float(row["test_acc"]) == trial.system_attrs[FINAL_ATTR]["test_acc"]
        assert row.get("regularizer.lam", "") == str(trial.params.get("regularizer.lam", ""))  # no column: never sampled
    trials_part, learned_part = (sweep_dir / "summary.md").read_text().split("\n## What the search learned\n")
    markdown = trials_part.splitlines()
    assert len(markdown) == 2 + 2 and markdown[2].startswith(f"| {rows[0]['trial']} | complete |")
    assert "need at least 5 completed trials; this search has 2" in learned_part
    for image in ("optimization_history.png", "parallel_coordinates.png"):
        assert (sweep_dir / image).read_bytes().startswith(b"\x89PNG")
    # hreg-study rewrites the same summary from the database alone.
    written = (sweep_dir / "summary.csv").read_text()
    (sweep_dir / "summary.csv").unlink()
    hreg_study([str(sweep_dir)])
    assert (sweep_dir / "summary.csv").read_text() == written

    # The same command again: the study is complete, nothing runs, nothing changes.
    job_dirs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    again = sweep(tmp_path, "t", "hydra.sweeper.n_trials=2")
    assert "2 trials done, 0 to resume, 0 to run" in again.stderr + again.stdout
    _, study = load(tmp_path, "t")
    assert [(t.number, t.datetime_complete) for t in study.trials] == [(t.number, t.datetime_complete) for t in trials]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == job_dirs

    # A crash leaves a trial running: a rerun marks it failed and runs only the missing trial.
    study.ask()
    sweep(tmp_path, "t", "hydra.sweeper.n_trials=3")
    _, study = load(tmp_path, "t")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[2].system_attrs[STATUS_ATTR] == "lost"
    assert [t.datetime_complete for t in study.trials[:2]] == [t.datetime_complete for t in trials]


def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path):
    # Random sampler, seed 0: lr 1e9, 1e-3, 1e9 (a huge step makes the loss NaN in the first epoch).
    proc = sweep(
        tmp_path, "nan", *FIXED, "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
        "optimizer.lr=choice(1e-3,1e9)", "hydra.sweeper.n_trials=3",
    )
    _, study = load(tmp_path, "nan")
    lrs = [t.params["optimizer.lr"] for t in study.trials]
    assert lrs == [1e9, 1e-3, 1e9]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    assert [t.system_attrs[STATUS_ATTR] for t in study.trials] == ["diverged", "completed", "diverged"]
    assert "diverged at epoch 1: training loss is nan" in proc.stdout + proc.stderr
    assert study.best_value > 0.3


def test_a_bad_trial_is_pruned_by_the_median_pruner(tmp_path):
    prune_early = ("hydra/launcher=basic", "search.pruner.n_startup_trials=1", "search.pruner.n_warmup_steps=0",
                   *FIXED)
    sweep(tmp_path, "prune", "optimizer.lr=1e-3", "hydra.sweeper.n_trials=1", *prune_early)
    # Same study, one more trial with a learning rate too small to learn anything: below the median.
    proc = sweep(tmp_path, "prune", "optimizer.lr=1e-7", "hydra.sweeper.n_trials=2", *prune_early)
    sweep_dir, study = load(tmp_path, "prune")
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert list(bad.intermediate_values) == [1] and bad.value == bad.intermediate_values[1]
    run = read_result(tmp_path / bad.system_attrs[RUN_DIR_ATTR])
    assert run["status"] == "pruned" and run["epochs_completed"] == 1
    best = checkpoint.load(tmp_path / bad.system_attrs[RUN_DIR_ATTR] / "checkpoints" / checkpoint.BEST)
    assert best["epoch"] == run["best"]["epoch"] == 1, "the epoch a trial is pruned at is still checkpointed"
    assert "run stopped (pruned)" in proc.stdout + proc.stderr
    with open(sweep_dir / "summary.csv") as f:
        assert [(r["trial"], r["state"], r["status"]) for r in csv.DictReader(f)] == [
            ("0", "complete", "completed"),
            ("1", "pruned", "pruned"),
        ]


def test_parallel_trials_with_joblib_each_report_to_their_own_trial(tmp_path):
    sweep(
        tmp_path, "par", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2", *FIXED,
    )
    _, study = load(tmp_path, "par")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len({t.system_attrs[RUN_DIR_ATTR] for t in study.trials}) == 2
    for trial in study.trials:  # reported from the worker process: evaluations at epochs 1 and 3
        assert sorted(trial.intermediate_values) == [1, 3] and trial.intermediate_values[3] == trial.value
        assert read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])["optuna_trial"] == trial.number


@pytest.mark.parametrize(
    "args, message",
    [
        (("regularizer.lam=interval(1e-5,1e-3)",), "search.space.lam.low"),
        (("objective=val_loss", "hydra.sweeper.direction=maximize"), "must be minimized"),
        (("objective=test_acc",), "objective='test_acc': must be one of val_acc, val_loss"),
        (("hydra/sweeper/sampler=grid", "model.dropout=choice(0.0,0.1)"), "hydra.sweeper.custom_search_space=null"),
    ],
)
def test_a_mistaken_sweep_stops_with_one_line(tmp_path, args, message):
    proc = sweep(tmp_path, "bad", *args, expect_rc=2)
    assert message in one_error_line(proc)


@pytest.mark.parametrize("without", ["hydra.sweeper.custom_search_space=null", "~search.space"])
def test_a_search_of_the_command_lines_sweeps_only_tries_their_grid(tmp_path, without):
    """Without search.space (either way), the grid sampler tries each point of the sweeps once, and nothing else."""
    sweep(tmp_path, "grid", "hydra/sweeper/sampler=grid", without, "model.dropout=choice(0.0,0.1)",
          "optimizer.lr=choice(0.001,0.003)", "hydra/launcher=basic")
    _, study = load(tmp_path, "grid")
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    points = sorted((t.params["model.dropout"], t.params["optimizer.lr"]) for t in study.trials)
    assert points == [(0.0, 0.001), (0.0, 0.003), (0.1, 0.001), (0.1, 0.003)]
    assert all(set(t.params) == {"model.dropout", "optimizer.lr"} for t in study.trials)


@pytest.mark.parametrize("given, launcher", [
    ((), "stacked"),
    (("hydra/launcher=basic",), "basic"),
    (("hydra/launcher=joblib",), "joblib"),
    (("engine=lightning",), "basic"),  # the pool stacks native runs only
])
def test_a_search_on_the_native_engine_that_names_no_launcher_trains_on_the_pool(given, launcher):
    config = compose_config("hydra/sweeper=optuna", *given, hydra=True)
    search = instantiate(config.hydra.callbacks.optuna_search)
    with read_write(config), open_dict(config):
        config.hydra.job.num = 0
        search._apply_defaults(config)
    job = compose_config("hydra/sweeper=optuna", *given, *config.hydra.overrides.hydra, hydra=True)  # as Hydra does
    for cfg in (config, job):
        assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher
        assert on_pool(cfg.hydra) == (launcher == "stacked"), "the launcher decides the pruner"


def test_a_job_reports_to_the_trial_it_is_given_and_stops_as_lost_once_that_trial_has_ended(tmp_path):
    """The sweeper tells each job its trial (hydra.sweeper.trial); a restarted sweeper may have failed it meanwhile."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    old, new = study.ask(), study.ask()

    def job(number: int, run_dir: str) -> SimpleNamespace:  # what connect reads of a job's run context
        hydra = OmegaConf.create({
            "sweeper": {"study_name": "s", "storage": url, "trial": number},
            "runtime": {"output_dir": run_dir}, "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
        })
        return SimpleNamespace(hydra=hydra, cfg=compose_config("search.pruner=null"), log=logging.getLogger("test"))

    current = TrialReporter.connect(job(new.number, "second/0"))
    assert current.number == new.number
    current.on_epoch_end(None, 10, None, {"val_acc": 0.5}, True)
    current.judge(SimpleNamespace(cfg=SimpleNamespace(epochs=20)), 10)  # no pruner: goes on
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert trials[new.number].intermediate_values == {10: 0.5}
    assert trials[new.number].system_attrs[RUN_DIR_ATTR] == "second/0"
    again = TrialReporter.connect(job(new.number, "second/0"))  # the same job started again (requeued)
    assert again.number == new.number

    study.tell(old.number, state=TrialState.FAIL)  # the first sweeper was killed; its restart failed the trial
    late = TrialReporter.connect(job(old.number, "first/0"))  # the first sweeper's job, starting only now
    with pytest.raises(Lost):
        late.on_epoch_end(None, 1, None, {"val_acc": 0.5}, True)
    assert RUN_DIR_ATTR not in optuna.load_study(study_name="s", storage=url).trials[old.number].system_attrs
