"""Optuna search on top of hydra-optuna-sweeper: dependent parameters, resume and pruning.

The plugin asks trials, launches one job per trial and tells the job's return
value. Four things it does not do are added here, without replacing it:

* Defaults. Hydra refuses a YAML ``hydra/sweeper/optuna.yaml`` beside the
  plugin's structured config of the same name, so ``OptunaSearch`` (a Hydra
  callback, conf/search/optuna.yaml) turns the bare ``hydra/sweeper=optuna``
  into hreg's sweep by adding hydra overrides the user did not give: the
  search space hook, direction, study name, sweep directory, database.
* Dependent parameters: ``suggest`` is the plugin's ``custom_search_space``
  hook; it samples ``search.space`` and skips an entry whose ``when`` fails,
  so a trial never records a parameter that did not apply.
* Resume: the study lives in ``SWEEP_DIR/optuna.db``; a rerun fails the trials
  a crash left running and asks only for the trials still missing.
* Pruning: the job finds its trial in the database (``TrialReporter``) and
  reports the validation objective at each evaluation. A job cannot finish its
  own trial (the plugin's later tell would raise), so it records its run's
  status on the trial and the sweeper's storage (src/hreg/sweep_storage.py)
  turns the plugin's tell into PRUNED. A diverged run returns NaN, and its job fails.
"""

from __future__ import annotations

import logging
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hreg.config import ConfigError, validate
from hreg.hooks import Hook, RunContext
from hreg.loop import EpochStats, StopRun

if TYPE_CHECKING:
    from optuna.trial import Trial

# optuna is imported where it is used: single runs never pay for it.

log = logging.getLogger("hreg")

PLUGIN_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
DIRECTIONS = {"val_acc": "maximize", "val_loss": "minimize"}
DATABASE = "optuna.db"

# System attributes of a trial (user attributes are the plugin's fixed parameters).
OVERRIDES_ATTR = "hreg:overrides"  # the job's overrides, set when the trial is sampled
RUN_DIR_ATTR = "hreg:run_dir"  # set by the job that claims the trial
STATUS_ATTR = "hreg:status"  # the run's status: completed, pruned, diverged, ... or lost
FINAL_ATTR = "hreg:final"  # final metrics of the run (validation and test)
EPOCHS_ATTR = "hreg:epochs"  # epochs the run trained
LOST = "lost"  # a trial left running by a crashed sweep


def database_url(sweep_dir: Path) -> str:
    """The default storage of a study: SQLite in its sweep directory."""
    return f"sqlite:///{Path(sweep_dir).resolve() / DATABASE}"


def _is_optuna(config: DictConfig) -> bool:
    return config.hydra.sweeper._target_ == PLUGIN_SWEEPER


class SearchError(ValueError):
    """A sweep setting that cannot work; the message is one line."""


class Pruned(StopRun):
    status = "pruned"


class NonFiniteObjective(RuntimeError):
    """A job returned NaN or infinity: its trial fails (the plugin itself would crash on telling NaN)."""


# --- the search space (runs in the sweeper, once per trial) ---------------------------------


def _current_value(cfg: DictConfig, trial: Trial, param: str) -> Any:
    """A parameter's value for this trial: sampled, fixed on the command line, or the config's."""
    if param in trial.params:
        return trial.params[param]
    if param in trial.user_attrs:
        return trial.user_attrs[param]
    choices = cfg.hydra.runtime.choices
    return choices[param] if param in choices else OmegaConf.select(cfg, param)


def _applies(cfg: DictConfig, trial: Trial, when: DictConfig | None) -> bool:
    if not when:
        return True
    return all(str(_current_value(cfg, trial, p)) in [str(v) for v in allowed] for p, allowed in when.items())


def _sample(trial: Trial, entry: DictConfig) -> None:
    name, kind = entry.param, entry.type
    if kind == "categorical":
        trial.suggest_categorical(name, list(entry.choices))
    elif kind == "float":
        trial.suggest_float(name, entry.low, entry.high, log=entry.get("log", False), step=entry.get("step"))
    elif kind == "int":
        trial.suggest_int(name, entry.low, entry.high, log=entry.get("log", False), step=entry.get("step") or 1)
    else:
        raise SearchError(f"search.space entry {name}: type={kind!r}: must be float, int or categorical")


def suggest(cfg: DictConfig, trial: Trial) -> None:
    """The plugin's ``custom_search_space`` hook: sample ``search.space`` into ``trial``.

    Entries already set (sampled from a command-line sweep, or fixed by a plain
    override) are left alone; an entry whose ``when`` fails is not sampled. The
    overrides the job will get are recorded on the trial, for the job to find it.
    """
    for entry in cfg.search.space.values():
        taken = entry.param in trial.params or entry.param in trial.user_attrs
        if not taken and _applies(cfg, trial, entry.get("when")):
            _sample(trial, entry)
    overrides = {**trial.params, **trial.user_attrs}  # what the plugin turns into the job's overrides
    trial.set_system_attr(OVERRIDES_ATTR, sorted(f"{k}={v}" for k, v in overrides.items()))


# --- the job's side: find the trial, report, prune ------------------------------------------


def _in_optuna_sweep() -> bool:
    return HydraConfig.initialized() and (
        HydraConfig.get().mode == RunMode.MULTIRUN and HydraConfig.get().sweeper._target_ == PLUGIN_SWEEPER
    )


def _storage_url(storage: Any) -> str | None:
    return storage if storage is None or isinstance(storage, str) else storage.url


class TrialReporter(Hook):
    """Reports each evaluation to the job's Optuna trial and stops the run when the pruner says so."""

    def __init__(self, trial: Trial, objective: str) -> None:
        self.trial = trial
        self.objective = objective

    @classmethod
    def connect(cls, cfg: DictConfig) -> TrialReporter | None:
        """Reconnect to the sweep's study and claim the running trial launched with this job's overrides."""
        import optuna
        from optuna.trial import Trial, TrialState

        sweeper = HydraConfig.get().sweeper
        pruner = instantiate(cfg.search.pruner) if cfg.search.pruner else optuna.pruners.NopPruner()
        study = optuna.load_study(sweeper.study_name, storage=_storage_url(sweeper.storage), pruner=pruner)
        overrides = sorted(HydraConfig.get().overrides.task)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = frozen.system_attrs
            if attrs.get(OVERRIDES_ATTR) == overrides and RUN_DIR_ATTR not in attrs:
                trial = Trial(study, frozen._trial_id)
                trial.set_system_attr(RUN_DIR_ATTR, HydraConfig.get().runtime.output_dir)
                log.info("optuna: trial %d of study %s (pruner %s)", trial.number, study.study_name, type(pruner).__name__)
                return cls(trial, cfg.objective)
        log.warning("optuna: no running trial of study %s matches this job; it reports nothing", study.study_name)
        return None

    def on_start(self, ctx: RunContext, first_epoch: int) -> None:
        ctx.result["optuna_trial"] = self.trial.number

    def on_epoch_end(self, ctx: RunContext, epoch: int, stats: EpochStats, metrics: dict[str, float] | None) -> None:
        if metrics is None or not math.isfinite(metrics[self.objective]):
            return
        self.trial.report(metrics[self.objective], epoch)
        if self.trial.should_prune():
            raise Pruned(
                f"trial {self.trial.number}: {self.objective} {metrics[self.objective]:.4f} at epoch {epoch} "
                f"is worse than the pruner ({type(self.trial.study.pruner).__name__}) allows"
            )

    def on_end(self, ctx: RunContext) -> None:
        final = ctx.result.get("final") or {}
        self.trial.set_system_attr(FINAL_ATTR, {k: v for k, v in final.items() if k.startswith(("val_", "test_"))})
        self.trial.set_system_attr(EPOCHS_ATTR, ctx.result.get("epochs_completed", 0))
        self.trial.set_system_attr(STATUS_ATTR, ctx.result["status"])
        if ctx.result["status"] == "interrupted":
            log.warning(
                "optuna: the same sweep command resumes study %s; trial %d will be run again",
                self.trial.study.study_name, self.trial.number,
            )


def trial_hooks(cfg: DictConfig) -> list[Hook]:
    """The reporter hook when this run is a job of an Optuna sweep with a database; else nothing."""
    if not _in_optuna_sweep() or _storage_url(HydraConfig.get().sweeper.storage) is None:
        return []
    reporter = TrialReporter.connect(cfg)
    return [reporter] if reporter else []


# --- the sweeper's side: defaults, resume, summary ------------------------------------------


def _given(overrides: list[str]) -> set[str]:
    """Keys set on the command line (``+key=v``, ``~key`` included)."""
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def _check_conditional_sweeps(config: DictConfig) -> None:
    """A command-line sweep over a dependent parameter would be sampled in every trial: refuse it."""
    dependent = {e.param: name for name, e in config.search.space.items() if e.get("when")}
    for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        key = override.get_key_element()
        if override.is_sweep_override() and key in dependent:
            raise SearchError(
                f"{key}: depends on another parameter, so it cannot be swept on the command line; "
                f"change its range with search.space.{dependent[key]}.low=... / .high=..."
            )


class OptunaSearch(Callback):
    """Turns ``-m hydra/sweeper=optuna`` into hreg's search, resumes its study, and summarises it."""

    def __init__(self, study_name: str, n_trials: int, n_jobs: int, max_failure_rate: float, root: str) -> None:
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.root = root

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_optuna(config):
            return
        try:
            validate(config)  # before the defaults below read config.objective
            with read_write(config), open_dict(config):
                self._apply_defaults(config)
                _check_conditional_sweeps(config)
                self._resume(config)
        except (ConfigError, SearchError) as error:
            print(f"hreg: error: {error}", file=sys.stderr)
            sys.exit(2)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In the job's process: a NaN objective (a run that diverged before evaluating) becomes a failed job."""
        if not _is_optuna(config) or job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, float) and not math.isfinite(value):
            job_return.status = JobStatus.FAILED
            job_return.return_value = NonFiniteObjective(f"objective {value}: the run ended without a finite value")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_optuna(config):
            return
        import optuna

        from hreg.study_summary import write_summary

        sweeper = config.hydra.sweeper
        study = optuna.load_study(sweeper.study_name, storage=_storage_url(sweeper.storage))
        for path in write_summary(study, Path(config.hydra.sweep.dir)):
            log.info("optuna: wrote %s", path)

    def _apply_defaults(self, config: DictConfig) -> None:
        """Add the hydra overrides the user did not give; jobs are composed with them too."""
        overrides = config.hydra.overrides.hydra
        given = _given(list(overrides))

        def default(key: str, value: Any) -> None:
            if key not in given:
                overrides.append(f"{key}={value}")
                OmegaConf.update(config, key, value)

        direction = DIRECTIONS[config.objective]
        if "hydra.sweeper.direction" in given and str(config.hydra.sweeper.direction) != direction:
            raise SearchError(
                f"hydra.sweeper.direction={config.hydra.sweeper.direction}: objective={config.objective} "
                f"must be {direction}d (leave hydra.sweeper.direction out)"
            )
        default("hydra.sweeper.direction", direction)
        default("hydra.sweeper.custom_search_space", f"{__name__}.suggest")
        default("hydra.sweeper.study_name", self.study_name)
        default("hydra.sweeper.n_trials", self.n_trials)
        default("hydra.sweeper.n_jobs", self.n_jobs)
        default("hydra.sweeper.max_failure_rate", self.max_failure_rate)
        default("hydra.sweep.dir", str(Path(self.root, config.hydra.sweeper.study_name)))
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")  # trial dirs of a rerun never collide
        default("hydra.sweep.subdir", f"{stamp}_${{hydra.job.num}}")
        default("hydra.sweeper.storage", database_url(config.hydra.sweep.dir))
        if config.hydra.sweeper.storage is None:
            raise SearchError("hydra.sweeper.storage=null: the search needs a database (for pruning and resume)")

    def _resume(self, config: DictConfig) -> None:
        """Fail the trials a crash left running; ask only for the trials still missing."""
        import optuna
        from optuna.trial import Trial, TrialState

        sweeper = config.hydra.sweeper
        url = _storage_url(sweeper.storage)
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=sweeper.study_name, storage=url, direction=str(sweeper.direction), load_if_exists=True
        )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            Trial(study, trial._trial_id).set_system_attr(STATUS_ATTR, LOST)
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("optuna: trial %d was left running by an earlier sweep; marked failed", trial.number)
        done = [t for t in study.get_trials(deepcopy=False) if t.system_attrs.get(STATUS_ATTR) != LOST]
        remaining = max(0, sweeper.n_trials - len(done))
        log.info(
            "optuna: study %s in %s: %d trials done, %d to run (n_trials=%d)",
            sweeper.study_name, url, len(done), remaining, sweeper.n_trials,
        )
        sweeper.n_trials = remaining
        sweeper.storage = {"_target_": "hreg.sweep_storage.SweepStorage", "url": url}
