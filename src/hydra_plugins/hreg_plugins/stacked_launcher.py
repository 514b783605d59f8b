"""The Hydra launcher plugin ``hydra/launcher=stacked`` (the work is in ``hreg.engines.stacked.launcher``).

No ``from __future__ import annotations`` here: Hydra runs plugin modules outside ``sys.modules``,
where dataclasses cannot resolve string annotations.
"""


from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hreg.search.pool import PoolLauncher


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.hreg_plugins.stacked_launcher.StackedLauncher"
    # Most runs in one stack; null: as many as fit in half of the device's free memory (at most 12 on a CPU).
    max_members: Optional[int] = None


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="hreg")


class StackedLauncher(PoolLauncher):
    def __init__(self, max_members: Optional[int] = None) -> None:
        self.max_members = max_members
        self.launch_: object = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hreg.engines.stacked.launcher import StackedLaunch  # torch and hreg only when the launcher is used

        self.launch_ = StackedLaunch(hydra_context, task_function, config, self.max_members)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.launch_.launch(job_overrides, initial_job_idx)

    def pool(self, ask: Callable, tell: Callable, initial_job_idx: int) -> float:
        """Jobs asked one by one as slots free up (hreg's sweeper); see ``StackedLaunch.pool``."""
        return self.launch_.pool(ask, tell, initial_job_idx)
