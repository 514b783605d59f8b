"""hreg's sweep loop: trials asked from the study, launched, and told as their runs ended.

The plugin's own loop tells COMPLETE for every job that returned a number, so
a pruned run's trial would end COMPLETE; it also asks ``n_jobs`` trials at a
time and waits for the whole batch. This loop, run by hreg's subclass of the
plugin's sweeper, keeps the plugin's study, search space and trial overrides
(its ``create_params_from_overrides`` and its sweeper's
``_process_searchspace_config``, ``_parse_sweeper_params_config``,
``_get_directions``, ``_to_grid_sampler_choices`` and ``_configure_trials``,
pinned by ``tests/test_sweep.py``) and changes two things:

- each trial is told what its run recorded on it (``STATUS_ATTR``): pruned
  runs end PRUNED, diverged or failed ones FAIL, the others COMPLETE;
- with ``hydra/launcher=stacked``, trials are asked one by one whenever a slot
  of the launcher's pool frees (``StackedLaunch.pool``) and told as soon as
  each run ends, so the sampler learns from every ended trial before it
  samples the next; with any other launcher, ``n_jobs`` at a time.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hreg.cluster import WorkerLost
from hreg.result import Status
from hreg.search.space import next_job_number
from hreg.search.study import JOB_ATTR, OVERRIDES_ATTR, RUN_DIR_ATTR, STATUS_ATTR, job_key, storage_url

log = logging.getLogger("hreg")

RESULTS_FILE = "optimization_results.yaml"


class Sweep:
    """One sweep of the plugin's sweeper ``impl`` (its ``OptunaSweeperImpl``, set up by Hydra)."""

    def __init__(self, impl: Any, arguments: list[str]) -> None:
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        self.impl = impl
        impl._process_searchspace_config()
        distributions, self.fixed = create_params_from_overrides(impl._parse_sweeper_params_config() + list(arguments))
        self.space = dict(impl.search_space_distributions or {})
        self.space.update(distributions)
        self.n_trials = impl.n_trials
        self.grid = isinstance(impl.sampler, functools.partial) and impl.sampler.func == optuna.samplers.GridSampler
        if self.grid:
            choices = {name: impl._to_grid_sampler_choices(d) for name, d in self.space.items()}
            impl.sampler = impl.sampler(choices)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in choices.values()))
            log.info("Updating num of trials to %d due to using GridSampler.", self.n_trials)
        for name in self.fixed:
            self.space.pop(name, None)
        self.study = optuna.create_study(study_name=impl.study_name, storage=impl.storage, sampler=impl.sampler,
                                         directions=impl._get_directions(), load_if_exists=True)
        log.info("Study name: %s | Storage: %s | Sampler: %s | Directions: %s", self.study.study_name,
                 impl.storage, type(impl.sampler).__name__, impl._get_directions())
        # What the jobs record on their trials, read from the database itself (the study's cache keeps the
        # trials this process asked as it last wrote them).
        from optuna.storages import RDBStorage

        self.records = RDBStorage(storage_url(impl.storage))
        self.study_id = self.records.get_study_id_from_name(self.study.study_name)
        self.asked = 0
        self.counts = {"complete": 0, "pruned": 0, "fail": 0}
        # Trials an earlier sweep on stacks left running with a checkpoint (the search callback kept them):
        # the pool resumes them first, each in its own directory.
        from optuna.trial import TrialState

        self.resuming = list(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def ask(self) -> tuple[Hashable, Sequence[str], Path | None] | None:
        """A trial, its job's overrides and, for a trial that resumes, its run directory; a new trial while
        fewer than ``n_trials`` have been asked; then None."""
        if self.resuming:
            frozen = self.resuming.pop(0)
            trial_id = self.records.get_trial_id_from_study_id_trial_number(self.study_id, frozen.number)
            self.records.set_trial_system_attr(trial_id, JOB_ATTR, job_key(self.impl.config.hydra, next_job_number()))
            log.info("optuna: trial %d resumes in %s", frozen.number, frozen.system_attrs[RUN_DIR_ATTR])
            return frozen.number, list(frozen.system_attrs[OVERRIDES_ATTR]), Path(frozen.system_attrs[RUN_DIR_ATTR])
        if self.asked >= self.n_trials:
            return None
        self.asked += 1
        trial = self.study.ask()
        (overrides,) = self.impl._configure_trials([trial], self.space, self.fixed)
        return trial, overrides, None

    def tell(self, trial: Any, ret: JobReturn) -> None:
        """End ``trial`` (a Trial, or a resumed trial's number) as its run did: the status its job recorded
        on it, else what the job returned."""
        from optuna.trial import TrialState

        number = trial if isinstance(trial, int) else trial.number
        trial_id = self.records.get_trial_id_from_study_id_trial_number(self.study_id, number)
        record = self.records.get_trial(trial_id)
        value = ret.return_value if ret.status == JobStatus.COMPLETED else None
        try:
            if record.system_attrs.get(STATUS_ATTR) == Status.PRUNED.value:
                # Its value is its last report, as Optuna gives a pruned trial (the study's cache has no reports).
                if record.last_step is not None:
                    self.records.set_trial_values(trial_id, [record.intermediate_values[record.last_step]])
                self.study.tell(trial, state=TrialState.PRUNED)
                self.counts["pruned"] += 1
            elif isinstance(value, (float, int)) and math.isfinite(value):
                self.study.tell(trial, float(value))
                self.counts["complete"] += 1
            else:
                self.study.tell(trial, state=TrialState.FAIL)
                self.counts["fail"] += 1
                failure = value if ret.status == JobStatus.COMPLETED else ret._return_value
                if not isinstance(failure, WorkerLost):  # its launcher has said why, with where its output is
                    log.warning("Failed experiment: %s", failure)
        except RuntimeError as error:  # the grid sampler stops the study once its grid is done
            if not (self.grid and "Study.stop" in str(error)):
                raise

    def run(self) -> None:
        impl = self.impl
        if callable(getattr(impl.launcher, "pool", None)):
            resumed = len(self.resuming)
            occupancy = impl.launcher.pool(self.ask, self.tell, initial_job_idx=impl.job_idx)
            impl.job_idx += self.asked + resumed
            log.info("optuna: pool occupancy %.0f%% while trials remained to be asked", 100 * occupancy)
        else:
            occupancy = None
            while self.asked < self.n_trials:
                batch = [self.ask() for _ in range(min(impl.n_jobs, self.n_trials - self.asked))]
                returns = impl.launcher.launch([overrides for _, overrides, _ in batch], initial_job_idx=impl.job_idx)
                impl.job_idx += len(returns)
                failed = self.counts["fail"]
                for (trial, _, _), ret in zip(batch, returns):
                    self.tell(trial, ret)
                if (self.counts["fail"] - failed) / len(returns) > impl.max_failure_rate:
                    log.error("Failed %d times out of %d with max_failure_rate=%s.", self.counts["fail"] - failed,
                              len(returns), impl.max_failure_rate)
                    for ret in returns:
                        ret.return_value  # raises a failed job's error, with its traceback
        log.info("optuna: %d trials told (%s)", self.asked, ", ".join(f"{n} {s}" for s, n in self.counts.items()))
        best = self.study.best_trial  # a ValueError when none completed: the sweeper subclass ends cleanly
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        if occupancy is not None:
            results["occupancy"] = round(occupancy, 4)
        log.info("Best parameters: %s", best.params)
        log.info("Best value: %s", best.value)
        OmegaConf.save(OmegaConf.create(results), Path(str(impl.config.hydra.sweep.dir)) / RESULTS_FILE)
