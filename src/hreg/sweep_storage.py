"""The storage the Optuna sweeper uses (set by hreg.sweep.OptunaSearch): a trial ends as its run says.

The plugin tells every trial COMPLETE when its job returned a float, FAIL
otherwise. A job cannot finish its own trial (the plugin's later tell would
then raise), so a pruned or diverged run records its status on the trial
instead, and this storage applies it when the plugin tells. Built on optuna
2.10's cached database storage (optuna is pinned below 3 by the plugin).
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState

from hreg.sweep import STATUS_ATTR

#: The trial state a run's status calls for, where it is not what the plugin tells.
STATE_OF_STATUS = {"pruned": TrialState.PRUNED, "diverged": TrialState.FAIL, "failed": TrialState.FAIL}


class SweepStorage(_CachedStorage):
    """Optuna's usual database storage, except that a pruned run's trial ends PRUNED, a diverged one's FAIL.

    A pruned trial keeps the last objective it reported as its value (what the
    plugin tells), as Optuna itself does; a failed one gets no value.
    """

    def __init__(self, url: str) -> None:
        super().__init__(RDBStorage(url))
        self.url = url

    def __repr__(self) -> str:
        return f"SweepStorage({self.url})"

    def _state_of_run(self, trial_id: int) -> TrialState | None:
        return STATE_OF_STATUS.get(self._backend.get_trial(trial_id).system_attrs.get(STATUS_ATTR))

    def set_trial_values(self, trial_id: int, values: Sequence[float]) -> None:
        if self._state_of_run(trial_id) != TrialState.FAIL:
            super().set_trial_values(trial_id, values)

    def set_trial_state(self, trial_id: int, state: TrialState) -> bool:
        if state.is_finished():
            state = self._state_of_run(trial_id) or state
        return super().set_trial_state(trial_id, state)
