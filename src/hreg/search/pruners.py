"""The pruner of searches on stacks: successive halving over running trials, judged rung by rung.

Optuna's ``MedianPruner`` compares a trial only with COMPLETE ones, so no
member of a first stack, trained in lockstep, is ever pruned. Optuna's
``SuccessiveHalvingPruner`` compares running trials too, but it records a
trial's value at a rung while judging it, so in lockstep the first member
judged at a rung sees only itself and is always promoted: who survives depends
on the order of the stack.

``RungPruner`` keeps successive halving's rule (at rung k, reached at epoch
``min_resource * reduction_factor ** k``, a trial goes on only if its value is
among the best ``1 / reduction_factor`` of every trial's value at that rung)
but reads the values at a rung from what trials have *reported*
(``FrozenTrial.intermediate_values``, Optuna's public API). The stacked engine
has every member report an epoch before it asks any to be judged
(``Hook.judge``), so the members of a stack are judged against each other,
whatever their order, and later trials against everything seen at that rung.
"""

from __future__ import annotations

import math

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class RungPruner(BasePruner):
    """Successive halving over every trial that reached a rung, running ones included.

    ``min_resource``: the first rung's epoch; ``reduction_factor``: rung k is at
    ``min_resource * reduction_factor ** k`` and keeps the best 1/reduction_factor
    (at least one); ``min_trials``: a rung prunes only once this many trials have
    reported there (the first trial at a rung always goes on).
    """

    def __init__(self, min_resource: int = 25, reduction_factor: int = 3, min_trials: int = 3) -> None:
        if not (isinstance(min_resource, int) and min_resource >= 1):
            raise ValueError(f"min_resource must be an integer >= 1, not {min_resource!r}")
        if not (isinstance(reduction_factor, int) and reduction_factor >= 2):
            raise ValueError(f"reduction_factor must be an integer >= 2, not {reduction_factor!r}")
        if not (isinstance(min_trials, int) and min_trials >= 1):
            raise ValueError(f"min_trials must be an integer >= 1, not {min_trials!r}")
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_trials = min_trials

    def threshold(self, previous: int | None, step: int) -> int | None:
        """The epoch of the rung that a report at ``step`` reaches (the first report at or past it), or None.

        ``previous`` is the trial's report before this one: a rung between two evaluations (rungs at
        25 and 75 with ``eval_every=10``) is judged at the first evaluation past it."""
        epoch = self.min_resource
        while epoch < step and not (previous is not None and previous < epoch):
            epoch *= self.reduction_factor
        reached = epoch <= step and (previous is None or previous < epoch)
        return epoch if reached else None

    @staticmethod
    def value_at(trial: FrozenTrial, threshold: int) -> float | None:
        """A trial's value at a rung: its first report at or past the rung's epoch."""
        steps = [s for s in trial.intermediate_values if s >= threshold]
        return trial.intermediate_values[min(steps)] if steps else None

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        earlier = [s for s in trial.intermediate_values if s < step]
        threshold = self.threshold(max(earlier) if earlier else None, step)
        if threshold is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        values = [v for t in study.get_trials(deepcopy=False, states=states)
                  if (v := self.value_at(t, threshold)) is not None and not math.isnan(v)]
        if len(values) < self.min_trials:
            return False
        kept = max(1, len(values) // self.reduction_factor)
        best = sorted(values, reverse=study.direction == StudyDirection.MAXIMIZE)[kept - 1]
        return value < best if study.direction == StudyDirection.MAXIMIZE else value > best
