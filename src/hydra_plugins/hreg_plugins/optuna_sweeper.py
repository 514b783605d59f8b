"""``hydra/sweeper=optuna``: hreg's Optuna sweeper, on the Optuna sweeper plugin's config schema.

The config is the plugin's ``OptunaSweeperConf`` (every ``hydra.sweeper.*`` key and
the ``hydra/sweeper/sampler`` group keep their meaning) with hreg's defaults and
``_target_`` set to the ``OptunaSweeper`` below, a plain Hydra ``Sweeper``; the
work is in ``hreg.search.loop``. Only the plugin's public config module is used.

The plugin stores its own ``hydra/sweeper/optuna`` node when Hydra scans the
plugins, in an order that depends on where each package is installed. So this
node is stored again by ``HregSearchPath``, a search path plugin, which Hydra
calls only after every plugin module has run: the last store wins.

No ``from __future__ import annotations`` here: Hydra runs plugin modules outside ``sys.modules``,
where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass
from typing import Any, List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf as PluginConf
from omegaconf import DictConfig


@dataclass
class OptunaSweeperConf(PluginConf):
    _target_: str = "hydra_plugins.hreg_plugins.optuna_sweeper.OptunaSweeper"
    # The sampler reaches the sweeper as its config: hreg builds it for today's Optuna (src/hreg/search/sampler.py).
    _recursive_: bool = False
    # null: maximize or minimize, as the run's `objective` needs (val_acc or val_loss)
    direction: Any = None
    study_name: Optional[str] = "hreg"
    # Trials the study should hold in the end (a resumed study runs only the missing ones).
    n_trials: int = 40
    # Trials launched at once by a launcher that takes batches (joblib, submitit); the pool takes none.
    n_jobs: int = 1
    # Diverged or crashed trials are recorded as failed and the sweep goes on.
    max_failure_rate: float = 1.0
    # null: sqlite:///SWEEP_DIR/optuna.db
    storage: Optional[Any] = None
    # Samples `search.space` (src/hreg/search/space.py).
    custom_search_space: Optional[str] = "hreg.search.space.suggest"
    # The trial a job runs: set by the sweeper in each job's overrides, never by hand.
    trial: Optional[int] = None


def store() -> None:
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="hreg")


store()


class HregSearchPath(SearchPathPlugin):
    """Stores hreg's ``hydra/sweeper/optuna`` once every plugin module has run (see the module's docstring)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        store()


class OptunaSweeper(Sweeper):
    """Asks the study for trials, launches their jobs (on a pool, or in batches) and tells what each run recorded."""

    def __init__(self, sampler: Any, direction: Any, storage: Optional[Any], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, search_space: Optional[DictConfig],
                 custom_search_space: Optional[str], params: Optional[DictConfig], trial: Optional[int] = None) -> None:
        self.settings = dict(sampler=sampler, direction=direction, storage=storage, study_name=study_name,
                             n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=max_failure_rate,
                             search_space=search_space, custom_search_space=custom_search_space, params=params)
        self.sweep_: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hreg.search.loop import Sweep  # optuna and hreg only when a search runs

        self.sweep_ = Sweep(hydra_context, task_function, config, **self.settings)

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweep_.run(arguments)
