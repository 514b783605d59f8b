"""What a search learned, for summary.md: which parameters mattered, and how each choice fared.

Importances are Optuna's fANOVA (``optuna.importance``): the share of the objective's
variance over the completed trials that each parameter explains, among the parameters every
completed trial sampled. For each categorical parameter (regularizer, norm, augment...), a
row per choice: how many trials chose it, how many completed, and the best and median
objective of those that completed. Pruned trials stopped early, at different epochs: their
values are not comparable with final ones, so they are counted but not ranked.
"""

from __future__ import annotations

import math
import statistics
import warnings

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.importance import FanovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hreg.report.tables import table

#: The fewest completed trials from which importances are estimated (fewer: a forest of noise).
MIN_COMPLETED = 5


def _value(value: float) -> str:
    return f"{value:.4g}"


def importances(study: optuna.Study) -> str:
    """The importance table, or one line saying why there is none."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < MIN_COMPLETED:
        return (f"Parameter importances need at least {MIN_COMPLETED} completed trials; "
                f"this search has {len(completed)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        found = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    if not found:
        return "No parameter was sampled by every completed trial, so none can be ranked."
    return (f"Parameter importances (fANOVA over the {len(completed)} completed trials: the share of the "
            "objective's variance each parameter explains; parameters some trials did not sample are left out):\n\n"
            + table(["parameter", "importance"], [[name, f"{share:.3f}"] for name, share in found.items()]))


def choices(study: optuna.Study) -> str:
    """Per categorical parameter and choice: trials, completed, best and median objective of the completed."""
    categorical = sorted({name for t in study.trials for name, d in t.distributions.items()
                          if isinstance(d, CategoricalDistribution)})
    if not categorical:
        return ""
    best = max if study.direction == StudyDirection.MAXIMIZE else min
    rows = []
    for name in categorical:
        chosen: dict[object, list[optuna.trial.FrozenTrial]] = {}
        for trial in study.trials:
            if name in trial.params:
                chosen.setdefault(trial.params[name], []).append(trial)
        for choice, trials in chosen.items():
            values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                      and math.isfinite(t.value)]
            rows.append([name, str(choice), str(len(trials)), str(len(values)),
                         _value(best(values)) if values else "–",
                         _value(statistics.median(values)) if values else "–"])
    return ("How each choice fared (objective of the trials that completed; pruned trials are counted only):\n\n"
            + table(["parameter", "choice", "trials", "completed", "best", "median"], rows))


def section(study: optuna.Study) -> str:
    """summary.md's closing section."""
    return "\n\n".join(part for part in ("## What the search learned", importances(study), choices(study)) if part)
