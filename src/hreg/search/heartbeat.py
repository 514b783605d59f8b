"""Workers that vanish without a word: a node lost, a process frozen or killed where no scheduler says so.

A job on a launcher other than the pool records a heartbeat on its trial
every ``search.heartbeat_s`` seconds from a thread of its own (``Beat``,
Optuna's ``record_heartbeat``). While a batch trains, the launcher asks ``Heartbeats``
which of its jobs' trials went stale: Optuna's ``fail_stale_trials`` fails a
running trial whose heartbeat is older than ``GRACE_BEATS`` intervals, and the
launcher cancels that job and fails it alone, so the sweep goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from hreg.search.outage import storage_errors
from hreg.search.study import GRACE_BEATS, TRIAL_KEY, is_optuna, open_storage, storage_url

if TYPE_CHECKING:
    from optuna.storages import RDBStorage


class Beat:
    """A job's heartbeat: its trial's, recorded every ``interval_s`` seconds by a daemon thread until stopped.
    A beat the database does not take is skipped (an outage is not a vanished worker)."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float) -> None:
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hreg-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except storage_errors():
                pass
            self.done.wait(self.interval_s)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def trial_number(overrides: Sequence[str]) -> int | None:
    """The trial a job's overrides give it (``hydra.sweeper.trial=N``), or None."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key == TRIAL_KEY:
            return int(value)
    return None


class Heartbeats:
    """The study of a sweep, read for trials whose jobs stopped beating."""

    def __init__(self, sweeper: DictConfig, heartbeat_s: int) -> None:
        import optuna

        self.heartbeat_s = heartbeat_s
        self.storage = open_storage(storage_url(sweeper.storage), heartbeat_s=heartbeat_s)
        self.study = optuna.load_study(study_name=sweeper.study_name, storage=self.storage)
        self.study_id = self.storage.get_study_id_from_name(sweeper.study_name)
        self.checked = time.monotonic()
        self.answering = time.monotonic()  # since when the database has answered (None during an outage)
        self.beaten: dict[int, float] = {}  # when the sweeper last beat for a queued job's trial, by number

    @classmethod
    def of(cls, config: DictConfig) -> Heartbeats | None:
        """The heartbeats of a sweep's jobs (``config``: the launcher's), or None when its jobs beat none."""
        beat = OmegaConf.select(config, "search.heartbeat_s", default=None)
        if not beat or not is_optuna(config.hydra) or storage_url(config.hydra.sweeper.storage) is None:
            return None
        return cls(config.hydra.sweeper, int(beat))

    def beat(self, overrides: Sequence[str]) -> None:
        """A heartbeat for the trial of a job that waits in its scheduler's queue (requeued after a time limit
        or a preemption): alive, with no process to beat for it. A beat the database does not take is skipped."""
        number = trial_number(overrides)
        now = time.monotonic()
        if number is None or now - self.beaten.get(number, -self.heartbeat_s) < self.heartbeat_s:
            return
        self.beaten[number] = now
        try:
            self.storage.record_heartbeat(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number))
        except storage_errors():
            pass

    def stopped(self, overrides: Sequence[str]) -> bool:
        """Whether the job with ``overrides`` stopped beating: its trial went stale and was failed. The study is
        checked at most once per heartbeat interval, and only once the database has answered for a grace period
        (no job could beat during an outage); a database that does not answer says nothing."""
        import optuna
        from optuna.trial import TrialState

        number = trial_number(overrides)
        if number is None:
            return False
        now = time.monotonic()
        try:
            if self.answering is not None and now - self.answering >= GRACE_BEATS * self.heartbeat_s \
                    and now - self.checked >= self.heartbeat_s:
                optuna.storages.fail_stale_trials(self.study)
                self.checked = now
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
            failed = self.storage.get_trial(trial_id).state == TrialState.FAIL
        except storage_errors():
            self.answering = None
            return False
        if self.answering is None:
            self.answering = now
        return failed
