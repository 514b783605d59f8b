"""``OptunaSearch``: the Hydra callback around hreg's search (``-m hydra/sweeper=optuna``).

hreg's sweeper (hydra_plugins/hreg_plugins/optuna_sweeper.py) asks trials,
launches their jobs and tells what each run recorded. Before it starts and after
it ends, this callback:

* applies the defaults that lie outside the sweeper's own config: the sweep
  directory (``ROOT/STUDY_NAME``) and its database, and the pool of stacks
  (``hydra/launcher=stacked``) for a search on the native engine that names no
  launcher (``hydra/launcher=basic`` for one trial at a time). Each is a hydra
  override the user did not give, so that every job is composed with it too;
* validates everything a sweep needs before any trial runs (the base config,
  the search space, the pruner), each mistake as one line;
* holds the sweep directory (one sweep per study at a time) and resumes its
  study: trials a crash left running are failed, only the missing ones are asked;
* fails a job that returned NaN (a diverged run), with an error that says so;
* writes the trial summary at the end (summary.py).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.hreg_plugins.stacked_launcher import StackedLauncherConf

from hreg import rundir
from hreg.config import given, validate
from hreg.cli import exit_on_error
from hreg.engines import engine_name
from hreg.result import OBJECTIVES, Status
from hreg.search.space import check_conditional_sweeps, check_space, entries
from hreg.search.pool import on_pool
from hreg.search.study import (
    OVERRIDES_ATTR, RUN_DIR_ATTR, STATUS_ATTR, SearchError, database_url, is_optuna, open_storage, storage_url,
)
from hreg.search.trial import build_pruner, pruner_key

log = logging.getLogger("hreg")


#: The launcher of a search that names none (on the native engine): the pool of stacks.
POOL_LAUNCHER = "stacked"


class NonFiniteObjective(RuntimeError):
    """A job returned NaN or infinity: its trial fails, and the sweep's log says why."""


def _first_refused(target: str, settings: dict[str, Any]) -> str | None:
    """The first of ``settings`` that the pruner class refuses on its own (the others left at their defaults)."""
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception:  # not importable: the whole node is wrong
        return None
    for name, value in settings.items():
        try:
            cls(**{name: value})
        except Exception:
            return name
    return None


def check_pruner(config: DictConfig) -> None:
    """Build the sweep's pruners once, before any trial: a mistake there would otherwise fail every job.
    Both are checked (``search.pruner`` for trials alone, ``search.stacked_pruner`` on stacks), so that a
    mistake is never taken silently. The line names the setting the pruner refused, where one alone is refused."""
    import optuna

    for on_stacks in (False, True):
        key = pruner_key(on_stacks)
        pruner_cfg = config.search.get(key)
        if pruner_cfg is not None and not (isinstance(pruner_cfg, DictConfig) and "_target_" in pruner_cfg):
            raise SearchError(f"search.{key}={pruner_cfg!r}: must be an optuna.pruners class (with _target_) or null")
        target = OmegaConf.select(config, f"search.{key}._target_", default=None)
        try:
            pruner = build_pruner(config.search, on_stacks)
        except Exception as error:  # instantiate wraps import errors, bad keys and bad values alike
            cause = error.__cause__ or error
            text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            settings = {k: v for k, v in OmegaConf.to_container(pruner_cfg).items() if not k.startswith("_")}
            name = _first_refused(target, settings)
            where = f"search.{key}.{name}={settings[name]!r}" if name else f"search.{key} (_target_={target})"
            raise SearchError(f"{where}: cannot be built: {text}") from None
        if not isinstance(pruner, optuna.pruners.BasePruner):
            raise SearchError(f"search.{key} (_target_={target}): not an optuna pruner")


def _open_study(name: str, url: str, direction: str, attempts: int = 5):
    """The study, created if new. Sweeps that start together on a new database race to create Optuna's tables
    (the loser gets a duplicate-key or already-exists error): the loser tries again, and finds them."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            storage = open_storage(url)
            return optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
        except Exception as error:  # a database that cannot be reached or opened, or the race
            race = isinstance(error, (IntegrityError, ProgrammingError)) and any(
                words in str(error) for words in ("already exists", "duplicate key"))
            if not race or attempt == attempts:
                raise SearchError(f"hydra.sweeper.storage={url}: cannot open the study database ({error})") from None
            time.sleep(0.5 * attempt)


class OptunaSearch(Callback):
    """Turns ``-m hydra/sweeper=optuna`` into hreg's search, resumes its study, and summarises it."""

    def __init__(self, root: str) -> None:
        self.root = root

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_optuna(config.hydra):
            return
        with exit_on_error("hreg"):
            validate(config)  # before the defaults below read config.objective
            check_space(entries(config))
            with read_write(config), open_dict(config):
                self._apply_defaults(config)
                check_pruner(config)
                check_conditional_sweeps(config)
                rundir.acquire(Path(config.hydra.sweep.dir))  # before _resume: it fails trials left running
                self._resume(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In the job's process: a NaN objective (a run that diverged) becomes a failed job."""
        if not is_optuna(config.hydra) or job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, float) and not math.isfinite(value):
            job_return.status = JobStatus.FAILED
            job_return.return_value = NonFiniteObjective(f"objective {value}: the run ended without a finite value")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_optuna(config.hydra):
            return
        import optuna

        from hreg.search.summary import write_summary

        sweeper = config.hydra.sweeper
        study = optuna.load_study(study_name=sweeper.study_name, storage=open_storage(storage_url(sweeper.storage)))
        for path in write_summary(study, Path(config.hydra.sweep.dir)):
            log.info("optuna: wrote %s", path)
        rundir.release(Path(config.hydra.sweep.dir))

    def _apply_defaults(self, config: DictConfig) -> None:
        """Add the hydra overrides the user did not give; jobs are composed with them too."""
        overrides = config.hydra.overrides.hydra
        overridden = given(overrides)

        def default(key: str, value: Any) -> None:
            if key not in overridden:
                overrides.append(f"{key}={value}")
                OmegaConf.update(config, key, value)

        if "hydra/launcher" not in overridden and config.hydra.runtime.choices.get("hydra/launcher") == "basic" \
                and engine_name(config) == "native":  # the pool of stacks; jobs are composed with it too
            overrides.append(f"hydra/launcher={POOL_LAUNCHER}")
            config.hydra.launcher = OmegaConf.structured(StackedLauncherConf)
            config.hydra.runtime.choices["hydra/launcher"] = POOL_LAUNCHER
        direction = OBJECTIVES[config.objective]
        given_direction = config.hydra.sweeper.direction
        if given_direction is not None and str(getattr(given_direction, "name", given_direction)) != direction:
            raise SearchError(
                f"hydra.sweeper.direction={config.hydra.sweeper.direction}: objective={config.objective} "
                f"must be {direction}d (leave hydra.sweeper.direction out)"
            )
        default("hydra.sweep.dir", str(Path(self.root, config.hydra.sweeper.study_name)))
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")  # trial dirs of a rerun never collide
        default("hydra.sweep.subdir", f"{stamp}_${{hydra.job.num}}")
        if config.hydra.sweeper.storage is None:  # the sweeper's default: SQLite in the sweep directory
            default("hydra.sweeper.storage", database_url(config.hydra.sweep.dir))
        if not isinstance(config.hydra.sweeper.n_trials, int) or config.hydra.sweeper.n_trials < 0:
            raise SearchError(f"hydra.sweeper.n_trials={config.hydra.sweeper.n_trials!r}: must be an integer >= 0")
        if not isinstance(config.hydra.sweeper.n_jobs, int) or config.hydra.sweeper.n_jobs < 1:
            raise SearchError(f"hydra.sweeper.n_jobs={config.hydra.sweeper.n_jobs!r}: must be an integer >= 1")

    def _resume(self, config: DictConfig) -> None:
        """Deal with the trials a crash left running, and ask only for the trials still missing.

        On stacks (the pool trains in this process, so nothing else trains them) a
        trial whose run has a checkpoint stays running: the sweep loop resumes it
        from there. Any other is failed as lost and asked again.
        """
        from optuna.trial import TrialState

        from hreg.search.loop import end_trial, ended_run

        sweeper = config.hydra.sweeper
        url = storage_url(sweeper.storage)
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        study = _open_study(sweeper.study_name, url, OBJECTIVES[config.objective])
        storage = open_storage(url)
        study_id = storage.get_study_id_from_name(sweeper.study_name)
        lost, resuming = set(), set()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = trial.system_attrs.get(RUN_DIR_ATTR)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            record = ended_run(storage, trial_id, run_dir)
            if record is not None:  # it ended while the sweeper could not tell it
                state = end_trial(study, trial.number, record.status.value, record.objective_value())
                log.info("optuna: trial %d ended (%s) after its sweeper stopped; told %s from its result.json",
                         trial.number, record.status.value, state)
                continue
            if (on_pool(config.hydra) and OVERRIDES_ATTR in trial.system_attrs and run_dir
                    and rundir.resumable(Path(run_dir))):
                log.info("optuna: trial %d was left running by an earlier sweep; it resumes from its checkpoint",
                         trial.number)
                resuming.add(trial.number)
                continue
            storage.set_trial_system_attr(trial_id, STATUS_ATTR, Status.LOST.value)
            study.tell(trial.number, state=TrialState.FAIL)
            lost.add(trial.number)  # whatever its status says by now (its worker may still be writing it)
            log.warning("optuna: trial %d was left running by an earlier sweep; marked failed", trial.number)
        kept = [
            t for t in study.get_trials(deepcopy=False)
            if t.number not in lost and t.system_attrs.get(STATUS_ATTR) != Status.LOST.value
        ]
        remaining = max(0, sweeper.n_trials - len(kept))
        log.info(
            "optuna: study %s in %s: %d trials done, %d to resume, %d to run (n_trials=%d)",
            sweeper.study_name, url, len(kept) - len(resuming), len(resuming), remaining, sweeper.n_trials,
        )
        sweeper.n_trials = remaining
        sweeper.storage = url

