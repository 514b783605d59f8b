"""What the sweeper's side and the jobs' side of a search share: names in the study database and its URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hreg.errors import UserError

#: The plugin's sweeper, and hreg's subclass of it that the search callback puts in its place.
PLUGIN_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
HREG_SWEEPER = "hydra_plugins.hreg_plugins.optuna_sweeper.OptunaSweeper"
DATABASE = "optuna.db"

# System attributes of a trial (user attributes are the plugin's fixed parameters).
OVERRIDES_ATTR = "hreg:overrides"  # the job's overrides, set when the trial is sampled
JOB_ATTR = "hreg:job"  # [sweep id, hydra.job.num]: the sweeper process and job the trial is launched as
RUN_DIR_ATTR = "hreg:run_dir"  # set by the job that claims the trial
STATUS_ATTR = "hreg:status"  # the run's status: completed, pruned, diverged, ... or lost
FINAL_ATTR = "hreg:final"  # final metrics of the run (validation and test)
EPOCHS_ATTR = "hreg:epochs"  # epochs the run trained


#: The id of one sweeper process, set by the search callback as an environment variable of every job
#: (hydra.job.env_set): job numbers start from 0 again when a sweep is restarted.
SWEEP_ID = "HREG_SWEEP_ID"


def job_key(hydra: DictConfig, job_num: int) -> list:
    """What a trial records of the job it is launched as (``JOB_ATTR``), from the sweep's ``hydra`` node."""
    return [hydra.job.env_set.get(SWEEP_ID), job_num]


class SearchError(UserError):
    """A sweep setting that cannot work; the message is one line."""


def is_optuna(hydra: DictConfig) -> bool:
    """Whether ``hydra`` (a config's ``hydra`` node) runs the Optuna sweeper."""
    return hydra.sweeper.get("_target_") in (PLUGIN_SWEEPER, HREG_SWEEPER)


def database_url(sweep_dir: Path) -> str:
    """The default storage of a study: SQLite in its sweep directory."""
    return f"sqlite:///{Path(sweep_dir).resolve() / DATABASE}"


def storage_url(storage: Any) -> str | None:
    """The URL of ``hydra.sweeper.storage``: a URL already, or hreg's storage node (``url``)."""
    if storage is None or isinstance(storage, str):
        return storage
    return storage.url
