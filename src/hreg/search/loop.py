"""hreg's sweep loop: trials asked from the study, launched, and told as their runs ended.

Run by hreg's sweeper (``hydra/sweeper=optuna``), with Optuna's and Hydra's public
APIs only:

- the search space is the sweep's overrides and ``hydra.sweeper.params``
  (``distributions.py``) and ``search.space`` (``hydra.sweeper.custom_search_space``,
  ``space.py``), drawn with the trial's ``suggest_*`` methods;
- each job is told its trial (``hydra.sweeper.trial=NUMBER`` among its overrides)
  and reports to it (``trial.py``);
- each trial is told what its run recorded on it (``STATUS_ATTR``, through
  ``Status.trial_state``): pruned runs end PRUNED, diverged or failed ones FAIL,
  the others COMPLETE with the job's return value;
- with a pool launcher (``pool.py``: ``hydra/launcher=stacked``), trials are asked
  one by one whenever a slot frees and told as soon as each run ends, so the
  sampler learns from every ended trial before it samples the next; with any
  other launcher, ``n_jobs`` at a time.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from hreg.cli import exit_on_error
from hreg.cluster import WorkerLost
from hreg.result import OBJECTIVES, ResultError, RunResult, Status
from hreg.search.distributions import Space
from hreg.search.outage import Backlog, Outage, storage_errors
from hreg.search.pool import LATER, Asked, PoolLauncher
from hreg.search.sampler import build_sampler
from hreg.search.study import (
    OVERRIDES_ATTR, RUN_DIR_ATTR, STATUS_ATTR, TRIAL_KEY, SearchError, open_storage, storage_url,
)
from hreg.search.trial import run_attrs

log = logging.getLogger("hreg")

RESULTS_FILE = "optimization_results.yaml"


def ret_run_dir(ret: JobReturn) -> str | None:
    """The run directory of a job's return (none for a job lost before it started)."""
    return OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None


def run_record(run_dir: str | None) -> RunResult | None:
    """The record a run left in ``run_dir`` (its ``result.json``), or None."""
    try:
        return RunResult.load(Path(run_dir)) if run_dir else None
    except ResultError:
        return None


def ended_run(storage: BaseStorage, trial_id: int, run_dir: str | None) -> RunResult | None:
    """The record of the run in ``run_dir`` if it has ended, its end now recorded on trial ``trial_id`` as its
    job would have (a job that could not reach the database, or a sweeper that stopped); else None."""
    result = run_record(run_dir)
    if result is None or not result.status.is_over:
        return None
    for key, attr in run_attrs(result).items():
        storage.set_trial_system_attr(trial_id, key, attr)
    return result


def run_status(storage: BaseStorage, trial_id: int, ret: JobReturn) -> str | None:
    """The status a trial's run ended with: the one its job recorded on the trial, else the one its
    ``result.json`` says (``ended_run``), else None."""
    record = storage.get_trial(trial_id)
    status = record.system_attrs.get(STATUS_ATTR)
    if status is None:
        result = ended_run(storage, trial_id, record.system_attrs.get(RUN_DIR_ATTR) or ret_run_dir(ret))
        status = result.status.value if result is not None else None
    return status


def end_trial(study: optuna.Study, number: int, status: str | None, value: Any) -> str:
    """Tell trial ``number`` the state its run's ``status`` calls for (``Status.trial_state``; without a status,
    COMPLETE), with ``value`` when COMPLETE (FAIL where it is not a finite number); the state told."""
    state = Status(status).trial_state if status else "COMPLETE"
    if state == "COMPLETE" and not (isinstance(value, (float, int)) and math.isfinite(value)):
        state = "FAIL"
    try:
        if state == "PRUNED":  # its value is its last report
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif state == "COMPLETE":
            study.tell(number, float(value), skip_if_finished=True)
        else:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    except RuntimeError as error:  # the grid sampler stops the study once its grid is done
        if "Study.stop" not in str(error):
            raise
    return state


class Sweep:
    """One sweep of hreg's sweeper: its launcher, study, search space, and the trials asked and told."""

    def __init__(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig, *,
                 sampler: DictConfig, direction: Any, storage: Any, study_name: str, n_trials: int, n_jobs: int,
                 max_failure_rate: float, search_space: DictConfig | None, custom_search_space: str | None,
                 params: DictConfig | None) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sampler = sampler
        self.direction = str(getattr(direction, "name", direction) or OBJECTIVES[config.objective])
        self.url = storage_url(storage)
        self.study_name = study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.space_settings = (params, search_space, get_method(custom_search_space) if custom_search_space else None)
        self.asked = 0
        self.counts = {"complete": 0, "pruned": 0, "fail": 0}
        limit = float(OmegaConf.select(config, "search.outage_limit_s", default=600))
        self.outage = Outage(limit, "the sweep waits for it")
        self.drawing: int | None = None  # a trial being drawn: failed if the database went away meanwhile
        self.untold = Backlog(self.outage)  # the ends of trials whose runs ended, to tell in order

    def _open(self, arguments: list[str]) -> None:
        """The search space, the sampler and the study (created, or loaded to resume)."""
        self.space = Space(arguments, *self.space_settings, self.config)
        sampler, points = build_sampler(self.sampler, self.config.hydra.runtime.choices.get("hydra/sweeper/sampler"),
                                        self.space)
        if points is not None:
            self.n_trials = min(self.n_trials, points)
            log.info("Updating num of trials to %d due to using GridSampler.", self.n_trials)

        def open_study() -> None:
            self.storage = open_storage(self.url)
            self.study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                             direction=self.direction, load_if_exists=True)
            self.study_id = self.storage.get_study_id_from_name(self.study_name)
            # Trials an earlier sweep on a pool left running with a checkpoint (the search callback kept them):
            # the pool resumes them first, each in its own directory.
            self.resuming = list(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

        self.outage.retry(open_study, "opening the study")
        log.info("Study name: %s | Storage: %s | Sampler: %s | Direction: %s", self.study_name, self.url,
                 type(sampler).__name__, self.direction)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _draw(self, trial: optuna.Trial) -> list[str]:
        """Sample ``trial`` from the space; its job's overrides."""
        try:
            return self.space.draw(trial)
        except ValueError as error:  # Optuna refuses a parameter this study has drawn from another distribution
            self.study.tell(trial, state=TrialState.FAIL)
            raise SearchError(f"study {self.study_name}: {error}; keep its search space, or start a new study "
                              "(hydra.sweeper.study_name=...)") from None

    def ask(self) -> Asked | str | None:
        """For the pool: a trial's number, its job's overrides and, for a trial that resumes, its run
        directory; None once ``n_trials`` have been asked; ``LATER`` while the database does not answer
        (after the trials that ended are told, in order)."""
        try:
            if self.untold.flush():
                return self._ask()
        except storage_errors() as error:
            self.outage.failed(error)
        self.outage.check("asking for a trial")
        return LATER

    def _ask(self) -> Asked | None:
        if self.drawing is not None:  # the database went away while this trial was drawn: never launched
            self.study.tell(self.drawing, state=TrialState.FAIL, skip_if_finished=True)
            self.drawing = None
            self.asked -= 1
        if self.resuming:
            frozen = self.resuming.pop(0)
            log.info("optuna: trial %d resumes in %s", frozen.number, frozen.system_attrs[RUN_DIR_ATTR])
            overrides = list(frozen.system_attrs[OVERRIDES_ATTR])
            return frozen.number, [*overrides, f"{TRIAL_KEY}={frozen.number}"], Path(frozen.system_attrs[RUN_DIR_ATTR])
        if self.asked >= self.n_trials:
            return None
        trial = self.study.ask()
        self.asked += 1
        self.drawing = trial.number
        overrides = self._draw(trial)
        self.storage.set_trial_system_attr(self._trial_id(trial.number), OVERRIDES_ATTR, overrides)
        self.drawing = None
        return trial.number, [*overrides, f"{TRIAL_KEY}={trial.number}"], None

    def tell(self, number: int, ret: JobReturn) -> None:
        """For the pool: end trial ``number`` as its run did (``_tell``), now, or once the database answers
        again; meanwhile the pool trains on."""
        self.untold.put(lambda: self._tell(number, ret), f"telling trial {number} its end")

    def _tell(self, number: int, ret: JobReturn) -> None:
        """End trial ``number`` as its run did (``run_status``), else as its job returned."""
        status = run_status(self.storage, self._trial_id(number), ret)
        try:
            value, failure = ret.return_value, None
        except Exception as error:  # the job failed: JobReturn raises its error
            value, failure = None, error
        state = end_trial(self.study, number, status, value)
        if state == "FAIL" and not isinstance(failure, WorkerLost):  # its launcher has said why, and where
            log.warning("Failed experiment: %s", failure if failure is not None else value)
        self.counts[state.lower()] += 1

    def _launch_batches(self) -> None:
        """Trials ``n_jobs`` at a time through the launcher's ``launch``, told when the batch returns."""
        index = 0
        while self.asked < self.n_trials:
            batch = [self.outage.retry(self._ask, "asking for a trial")
                     for _ in range(min(self.n_jobs, self.n_trials - self.asked))]
            returns = self.launcher.launch([overrides for _, overrides, _ in batch], initial_job_idx=index)
            index += len(returns)
            failed = self.counts["fail"]
            for (number, _, _), ret in zip(batch, returns):
                self.outage.retry(lambda: self._tell(number, ret), f"telling trial {number} its end")
            if (self.counts["fail"] - failed) / len(returns) > self.max_failure_rate:
                log.error("Failed %d times out of %d with max_failure_rate=%s.", self.counts["fail"] - failed,
                          len(returns), self.max_failure_rate)
                for ret in returns:
                    ret.return_value  # raises a failed job's error, with its traceback

    def run(self, arguments: list[str]) -> None:
        with exit_on_error("hreg"):
            self._open(arguments)
            results: dict[str, Any] = {"name": "optuna"}
            if isinstance(self.launcher, PoolLauncher):
                occupancy = self.launcher.pool(self.ask, self.tell, initial_job_idx=0)
                self.outage.wait_until(self.untold.flush)  # the last trials' ends, once the database answers
                log.info("optuna: pool occupancy %.0f%% while trials remained to be asked", 100 * occupancy)
                results["occupancy"] = round(occupancy, 4)
            else:
                self._launch_batches()
        log.info("optuna: %d trials told (%s)", self.asked, ", ".join(f"{n} {s}" for s, n in self.counts.items()))
        self._write_results(results)

    def _write_results(self, results: dict[str, Any]) -> None:
        with exit_on_error("hreg"):
            self.outage.retry(lambda: best_results(self.study, results), "reading the best trial")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)


def best_results(study: optuna.Study, results: dict[str, Any]) -> None:
    """Add to ``results`` (``optimization_results.yaml``) the best trial's parameters and value, or why there
    is none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        results.update(best_params=best.params, best_value=best.value)
        log.info("Best parameters: %s", best.params)
        log.info("Best value: %s", best.value)
        return
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    log.warning("optuna: no trial of study %s completed (%s): no best parameters", study.study_name,
                counts or "no trials")
    results.update(best_params=None, best_value=None, completed_trials=0, trials=counts)
