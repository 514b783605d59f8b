"""What hreg relies on in the libraries below its search, pinned: a release that removes it fails here first.

- hydra-optuna-sweeper 1.3.0 declares ``optuna<3``; the lock overrides that pin
  (pyproject.toml ``[tool.uv]``, ARCHITECTURE.md "Pins"). hreg uses only its public
  config module: the ``OptunaSweeperConf`` schema and the ``hydra/sweeper/sampler`` group.
- Optuna 5: the public storage, study and distribution APIs that the sweep loop and
  the jobs call, and an old study database upgraded on resume.
- Nothing in ``src/`` reaches for a private name of another package, but for the few in ``PINNED``,
  each held by a test of its behaviour.
"""

from __future__ import annotations

import ast
import inspect
import sqlite3
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from hydra.core.config_store import ConfigStore
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from torch import nn

from hreg.checkpoint import copied
from hreg.model import MLP
from hreg.search.sampler import sampler_factory
from hreg.search.study import HREG_SWEEPER, SearchError, database_url, open_storage
from tests.conftest import REPO, compose_config, one_error_line, run_cli, run_train

#: A study database written by Optuna 2.10.1, as SQLite's text dump (tests/data/make_optuna_2_10_db.py).
OLD_DATABASE = REPO / "tests" / "data" / "optuna-2.10.sql"


def old_database(path: Path) -> None:
    """The database of OLD_DATABASE, rebuilt at ``path``."""
    with sqlite3.connect(path) as db:
        db.executescript(OLD_DATABASE.read_text())


#: Hydra's reserved config keys (``cfg._target_``): underscored, but not private names.
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
_STACKED_STEP = "tests/test_stacked.py::test_stacked_optimizer_steps_as_torch_does_with_each_members_numbers"
#: Private names that hreg uses on purpose, and the test that fails if their library changes them. The stack's
#: step calls torch's fused kernels on the rows of each block of members (no public call takes a learning rate
#: per member); a copied state_dict keeps torch's module versions, which ``load_state_dict`` reads.
PINNED = {
    "_fused_adam_": _STACKED_STEP,
    "_fused_adamw_": _STACKED_STEP,
    "_fused_sgd_": _STACKED_STEP,
    "_metadata": "tests/test_pins.py::test_a_copied_state_dict_keeps_torchs_module_versions",
}


def test_nothing_in_src_uses_a_private_name_of_another_package():
    """An underscored attribute or keyword (``x._name``, ``f(_name=...)``; not Hydra's ``_target_`` keys) that hreg
    does not define is another package's private API; so is a module path with an underscored part
    (``hydra_optuna_sweeper._impl``). Only the names in PINNED may be used, and each has its test."""
    defined, used, modules = set(), {}, {}
    for path in (REPO / "src").rglob("*.py"):
        where = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.attr not in PINNED:
                defined.add(node.attr)
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and node.attr not in HYDRA_KEYS:
                used.setdefault(node.attr, where)
            elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_") and node.arg not in HYDRA_KEYS:
                used.setdefault(node.arg, where)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for name in names:
                    if any(part.startswith("_") and not part.startswith("__") for part in name.split(".")):
                        modules[name] = where
    dunder = {name for name in used if name.startswith("__") and name.endswith("__")}
    assert {name: where for name, where in used.items() if name not in defined | dunder | set(PINNED)} == {}
    assert modules == {}
    assert set(PINNED) <= set(used), "a pinned name hreg no longer uses: drop it from PINNED"
    for test in set(PINNED.values()):
        file, name = test.split("::")
        assert f"def {name}(" in (REPO / file).read_text(), f"{test} pins a private name: it must exist"


def test_a_copied_state_dict_keeps_torchs_module_versions():
    """``checkpoint.copied`` keeps a state_dict's ``_metadata`` (each module's version, which ``load_state_dict``
    passes to the modules' loaders): torch must still attach it, and a copy must load as the original does."""
    model = MLP(norm=nn.BatchNorm1d)
    state = model.state_dict()
    copy = copied(state)
    assert state._metadata and copy._metadata == state._metadata and copy._metadata is not state._metadata
    assert all(copy[key] is not value and torch.equal(copy[key], value) for key, value in state.items())
    MLP(norm=nn.BatchNorm1d).load_state_dict(copy, strict=True)


def test_hydra_sweeper_optuna_is_hregs_sweeper_on_the_plugins_schema():
    from hydra_plugins.hreg_plugins.optuna_sweeper import OptunaSweeper
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

    sweeper = compose_config("hydra/sweeper=optuna", hydra=True).hydra.sweeper
    assert sweeper._target_ == HREG_SWEEPER
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    plugin_keys = {name for name in OptunaSweeperConf.__dataclass_fields__ if not name.startswith("_")} - {"defaults"}
    assert plugin_keys <= set(inspect.signature(OptunaSweeper).parameters), "every key of the plugin's schema"
    assert plugin_keys <= set(sweeper)


def sampler_node(*overrides: str):
    return compose_config("hydra/sweeper=optuna", *overrides, hydra=True).hydra.sweeper.sampler


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "nsgaii"])
def test_each_sampler_of_the_plugin_builds_on_todays_optuna_without_a_warning(name):
    node = sampler_node(f"hydra/sweeper/sampler={name}", "hydra.sweeper.sampler.seed=3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna 5 warns about the 2021 arguments left at their defaults
        sampler = sampler_factory(node, name)()
    assert type(sampler).__name__ == node._target_.rsplit(".", 1)[1]
    assert "sampler" in ConfigStore.instance().list("hydra/sweeper")


def relative_space(sampler: optuna.samplers.BaseSampler) -> set[str]:
    """The parameters ``sampler`` models jointly for a next trial, after trials on a conditional space."""
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        if trial.suggest_categorical("regularizer", ["none", "l2"]) == "l2":
            return lr - trial.suggest_float("lam", 1e-6, 1e-2, log=True)
        return lr

    study.optimize(objective, n_trials=12)
    return set(sampler.infer_relative_search_space(study, study.ask()))


def test_the_default_tpe_models_conditional_parameters_jointly_and_one_override_turns_it_off():
    """hreg's default ``group=True`` (sampler.DEFAULTS): ``lam``, drawn only with l2, is modelled with the
    parameters beside it; without it, TPE models jointly only what every trial draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # hreg's own experimental default is not announced in every search
        grouped = sampler_factory(sampler_node("hydra.sweeper.sampler.seed=0"), "tpe")()
    assert "lam" in relative_space(grouped)
    plain = sampler_factory(sampler_node("hydra.sweeper.sampler.seed=0", "+hydra.sweeper.sampler.group=false"), "tpe")
    assert relative_space(plain()) == {"lr", "regularizer"}


def test_the_grid_sampler_takes_its_choices_and_a_removed_sampler_is_refused_in_one_line():
    sampler = sampler_factory(sampler_node("hydra/sweeper/sampler=grid"), "grid")({"x": [1, 2, 3]})
    assert isinstance(sampler, optuna.samplers.GridSampler)
    with pytest.raises(SearchError, match="hydra/sweeper/sampler=tpe"):
        sampler_factory(sampler_node("hydra/sweeper/sampler=motpe"), "motpe")
    gp = sampler_node("hydra.sweeper.sampler._target_=optuna.samplers.GPSampler", "hydra.sweeper.sampler.seed=1")
    assert isinstance(sampler_factory(gp, "tpe")(), optuna.samplers.GPSampler)
    wrong = sampler_node("hydra.sweeper.sampler._target_=optuna.samplers.GPSampler",
                         "hydra.sweeper.sampler.n_ei_candidates=5")
    with pytest.raises(SearchError, match="n_ei_candidates=5: GPSampler takes no such argument"):
        sampler_factory(wrong, "tpe")


def test_optuna_keeps_the_storage_and_study_apis_hreg_calls(tmp_path):
    """What the sweep loop and the jobs call, as they call it (loop.py, trial.py)."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize", load_if_exists=True)
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), trial.number)
    storage.set_trial_system_attr(trial_id, "hreg:status", "pruned")
    storage.set_trial_intermediate_value(trial_id, 10, 0.8)
    storage.set_trial_intermediate_value(trial_id, 20, 0.85)
    assert optuna.pruners.NopPruner().prune(study, storage.get_trial(trial_id)) is False
    study.tell(trial.number, state=TrialState.PRUNED)
    ended = optuna.load_study(study_name="s", storage=storage).trials[0]
    assert (ended.state, ended.value, ended.system_attrs["hreg:status"]) == (TrialState.PRUNED, 0.85, "pruned")
    assert ended.distributions["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # trial.py: a report to an ended trial
        storage.set_trial_intermediate_value(trial_id, 30, 0.9)


def test_a_study_written_by_optuna_2_10_is_upgraded_on_resume_with_one_line(tmp_path):
    sweep_dir = tmp_path / "multirun" / "optuna" / "hreg"
    sweep_dir.mkdir(parents=True)
    old_database(sweep_dir / "optuna.db")
    with pytest.raises(RuntimeError, match="optuna storage upgrade"):  # as Optuna itself refuses it
        optuna.storages.RDBStorage(database_url(sweep_dir))
    # The old study searched the learning rate from 1e-4 (the default then): resumed on the same space.
    proc = run_train("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=5", "epochs=2", "data.train_fraction=0.01",
                     "monitor=none", "regularizer=none", "augment=none", "model/norm=none", "search.space.lr.low=1e-4",
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    upgrades = [line for line in (proc.stdout + proc.stderr).splitlines() if "written by an older Optuna" in line]
    assert len(upgrades) == 1 and "v2.6.0.a" in upgrades[0], upgrades
    assert "4 trials done, 0 to resume, 1 to run" in proc.stdout + proc.stderr
    trials = optuna.load_study(study_name="hreg", storage=database_url(sweep_dir)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED, TrialState.FAIL,
                                                                      TrialState.COMPLETE]
    assert trials[0].params["regularizer"] == "none" and trials[2].value == 0.85, "the old trials as they were"
    assert trials[4].distributions["optimizer.lr"] == trials[0].distributions["optimizer.lr"]
    assert isinstance(trials[4].distributions["model.dropout"], FloatDistribution)
    assert CategoricalDistribution(["none", "l1", "l2"]) == trials[0].distributions["regularizer"]


def test_hreg_study_reads_an_old_study_after_upgrading_it(tmp_path):
    old_database(tmp_path / "optuna.db")
    proc = run_cli("hreg-study", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "written by an older Optuna" in proc.stderr
    assert (tmp_path / "summary.md").read_text().count("| complete |") == 2


def test_a_sweep_mistake_in_the_sampler_is_one_line(tmp_path):
    proc = run_train("-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=motpe", "epochs=1", cwd=tmp_path)
    assert "MOTPESampler: removed from Optuna; use hydra/sweeper/sampler=tpe" in one_error_line(proc)
