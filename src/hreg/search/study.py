"""What the sweeper's side and the jobs' side of a search share: names in the study database, its URL, its storage."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from hreg.errors import UserError

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

log = logging.getLogger("hreg")

#: hreg's sweeper, which ``hydra/sweeper=optuna`` selects (hydra_plugins/hreg_plugins/optuna_sweeper.py).
HREG_SWEEPER = "hydra_plugins.hreg_plugins.optuna_sweeper.OptunaSweeper"
DATABASE = "optuna.db"

# System attributes of a trial (user attributes are the plugin's fixed parameters).
OVERRIDES_ATTR = "hreg:overrides"  # the job's overrides, set when the trial is sampled
RUN_DIR_ATTR = "hreg:run_dir"  # set by the job that claims the trial
STATUS_ATTR = "hreg:status"  # the run's status: completed, pruned, diverged, ... or lost
FINAL_ATTR = "hreg:final"  # final metrics of the run (validation and test)
EPOCHS_ATTR = "hreg:epochs"  # epochs the run trained

#: The job override that tells a job its trial: the sweeper adds ``hydra.sweeper.trial=NUMBER`` to each job's
#: overrides (a hydra override, so the task's own overrides and its directory name stay as they were).
TRIAL_KEY = "hydra.sweeper.trial"


class SearchError(UserError):
    """A sweep setting that cannot work; the message is one line."""


def is_optuna(hydra: DictConfig) -> bool:
    """Whether ``hydra`` (a config's ``hydra`` node) runs the Optuna sweeper."""
    return hydra.sweeper.get("_target_") == HREG_SWEEPER


def database_url(sweep_dir: Path) -> str:
    """The default storage of a study: SQLite in its sweep directory."""
    return f"sqlite:///{Path(sweep_dir).resolve() / DATABASE}"


def storage_url(storage: Any) -> str | None:
    """The URL of ``hydra.sweeper.storage``: a URL already, or hreg's storage node (``url``)."""
    if storage is None or isinstance(storage, str):
        return storage
    return storage.url


#: Heartbeats missed before a trial counts as stale (Optuna's grace period is this many intervals).
GRACE_BEATS = 3


def open_storage(url: str, heartbeat_s: int | None = None) -> RDBStorage:
    """The study database at ``url``, its schema upgraded first if an older Optuna wrote it (one log line).

    Optuna's upgrade is one way: a database upgraded here is no longer readable by the Optuna that wrote it.
    Connections are checked before use (``pool_pre_ping``), so a server that restarted gives a new one.
    ``heartbeat_s``: Optuna's heartbeat interval, for ``optuna.storages.fail_stale_trials``.
    """
    from optuna.storages import RDBStorage

    # A connection that died with its server fails its reset when it goes back to SQLAlchemy's pool, which
    # logs that with a traceback at every outage: the connection is dropped all the same, and a new one made.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    from optuna.exceptions import ExperimentalWarning

    engine = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beats = {"heartbeat_interval": heartbeat_s, "grace_period": GRACE_BEATS * heartbeat_s} if heartbeat_s else {}
    warnings.filterwarnings("ignore", category=ExperimentalWarning, message=".*heartbeat")  # in Optuna since 2.9
    try:
        return RDBStorage(url, engine_kwargs=engine, **beats)
    except RuntimeError as error:  # Optuna's compatibility check: "... execute `$ optuna storage upgrade` ..."
        if "storage upgrade" not in str(error):
            raise
    old = RDBStorage(url, engine_kwargs=engine, skip_compatibility_check=True, skip_table_creation=True)
    log.warning("optuna: the study database %s was written by an older Optuna (schema %s): upgrading it to %s, "
                "as `optuna storage upgrade` does", url, old.get_current_version(), old.get_head_version())
    old.upgrade()
    return RDBStorage(url, engine_kwargs=engine, **beats)
