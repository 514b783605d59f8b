"""The study database the sweeper uses (set by the search callback): a trial ends as its run says.

The plugin tells COMPLETE for every job that returned a float, FAIL for every
other one (a diverged run returns NaN, which the callback turns into a failed
job). A job cannot finish its own trial (the plugin's later tell would then
raise), so it records its run's status on the trial instead, and this storage
applies the state that status calls for (``Status.trial_state``: PRUNED for a
pruned run) when the plugin tells COMPLETE. Built on optuna 2.10's cached
database storage (optuna is pinned below 3 by the plugin).
"""

from __future__ import annotations

from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState

from hreg.result import Status
from hreg.search.study import STATUS_ATTR


class SweepStorage(_CachedStorage):
    """Optuna's usual database storage, except that a pruned run's trial ends PRUNED, not COMPLETE.

    A pruned trial keeps the last objective it reported as its value (what the
    job returned and the plugin tells), as Optuna itself does.
    """

    def __init__(self, url: str) -> None:
        super().__init__(RDBStorage(url))
        self.url = url

    def __repr__(self) -> str:
        return f"SweepStorage({self.url})"

    def set_trial_state(self, trial_id: int, state: TrialState) -> bool:
        status = self._backend.get_trial(trial_id).system_attrs.get(STATUS_ATTR)
        if state == TrialState.COMPLETE and status in Status._value2member_map_:
            state = TrialState[Status(status).trial_state]
        return super().set_trial_state(trial_id, state)
