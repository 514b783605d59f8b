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

A trial cannot wait at a rung for the trials that will reach it later (a
member trains on with its stack), so the first trials are promoted with few to
compare. So a trial goes on only while it stays among the best at the *last*
rung it passed, as later trials reach that rung (asynchronous successive
halving, where a promotion can be taken back). Earlier rungs are settled: a
trial that started slowly and caught up (elastic augmentation does) is not cut
at epoch 500 for its first 25 epochs, measured against fast starters the
sampler proposed since.

At every rung at least ``min_kept`` trials go on (all of them while fewer
reached it), so that a search ends with at least that many completed trials
to choose its best from, not one or two.
"""

from __future__ import annotations

import math

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class RungPruner(BasePruner):
    """Successive halving over every trial that reached a rung, running ones included, held at each evaluation
    at the last rung a trial passed.

    ``min_resource``: the first rung's epoch; ``reduction_factor``: rung k is at
    ``min_resource * reduction_factor ** k`` and keeps the best 1/reduction_factor
    (at least ``min_kept``); ``min_kept``: the fewest trials that go on at a rung
    (all of them while fewer reached it).
    """

    def __init__(self, min_resource: int = 25, reduction_factor: int = 3, min_kept: int = 4) -> None:
        for name, value, least in (("min_resource", min_resource, 1), ("reduction_factor", reduction_factor, 2),
                                   ("min_kept", min_kept, 1)):
            if not (isinstance(value, int) and value >= least):
                raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_kept = min_kept

    def rungs(self, step: int) -> list[int]:
        """The epochs of the rungs at or before ``step``."""
        rungs, epoch = [], self.min_resource
        while epoch <= step:
            rungs.append(epoch)
            epoch *= self.reduction_factor
        return rungs

    @staticmethod
    def value_at(trial: FrozenTrial, rung: int) -> float | None:
        """A trial's value at a rung: its first report at or past the rung's epoch (a rung between two
        evaluations, 25 with ``eval_every=10``, is judged at the next one, 30)."""
        steps = [s for s in trial.intermediate_values if s >= rung]
        return trial.intermediate_values[min(steps)] if steps else None

    def kept(self, value: float, values: list[float], maximize: bool) -> bool:
        """Whether ``value`` is among the best 1/reduction_factor of ``values``, or among the best ``min_kept``."""
        if len(values) <= self.min_kept:
            return True
        best = sorted(values, reverse=maximize)[max(self.min_kept, len(values) // self.reduction_factor) - 1]
        return value >= best if maximize else value <= best

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        if math.isnan(trial.intermediate_values[step]):
            return True
        rungs = self.rungs(step)
        if not rungs:
            return False
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        trials = study.get_trials(deepcopy=False, states=states)
        maximize = study.direction == StudyDirection.MAXIMIZE
        rung = rungs[-1]
        values = [v for t in trials if (v := self.value_at(t, rung)) is not None and not math.isnan(v)]
        return not self.kept(self.value_at(trial, rung), values, maximize)
