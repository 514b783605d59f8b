"""The plugin's Optuna sweeper with hreg's sweep loop (``hreg.search.loop``), ending cleanly when no trial completed.

The loop tells each trial what its run recorded (a pruned run's trial ends
PRUNED) and, with ``hydra/launcher=stacked``, asks trials one by one as slots
of the launcher's pool free up.

At its end the plugin asks the study for its best trial, which raises when no
trial completed (every trial diverged or was pruned, or ``n_trials=0``). Here
that ends the sweep with a warning and an ``optimization_results.yaml`` that
says so, and the callbacks still write the summary and the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginSweeper

log = logging.getLogger("hreg")

RESULTS_FILE = "optimization_results.yaml"


class OptunaSweeper(PluginSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        try:
            from hreg.search.loop import Sweep

            return Sweep(self.sweeper, arguments).run()
        except ValueError as error:
            if "dynamic value space" in str(error):  # the study's trials sampled other choices
                from hreg.cli import exit_on_error
                from hreg.search.study import SearchError

                with exit_on_error("hreg"):
                    raise SearchError(
                        f"study {self.sweeper.study_name} already has trials with other choices for a categorical "
                        "parameter; keep its choices, or start a new study (hydra.sweeper.study_name=...)"
                    ) from None
            import optuna
            from optuna.trial import TrialState

            impl = self.sweeper
            study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
            if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                raise  # not the missing best trial: a real error
            sweep_dir = Path(impl.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            counts = {state.name.lower(): 0 for state in TrialState}
            for trial in study.trials:
                counts[trial.state.name.lower()] += 1
            trials = {state: n for state, n in counts.items() if n}
            log.warning("optuna: no trial of study %s completed (%s): no best parameters", study.study_name, trials or "no trials")
            results = {"name": "optuna", "best_params": None, "best_value": None, "completed_trials": 0, "trials": trials}
            (sweep_dir / RESULTS_FILE).write_text(yaml.safe_dump(results, sort_keys=False))
            return None
