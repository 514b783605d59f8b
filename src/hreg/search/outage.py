"""A study database that does not answer for a while: retries with backoff, and one log line per outage.

A cluster's database restarts for maintenance, fails over, or drops idle
connections; SQLite is locked for a moment by another process (``hreg-study``,
a second command). A search rides through: the sweeper's and the jobs' calls to
the study are retried (``Outage.retry``), or kept for later (``Backlog``), and a
new connection is opened when the server is back (``pool_pre_ping``,
``study.open_storage``). Only past ``search.outage_limit_s`` seconds without an
answer does the sweeper stop (one line; the same command resumes the study) and
a job give up reporting (its run trains on without pruning, and its record
tells the trial later).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from hreg.errors import UserError

log = logging.getLogger("hreg")

T = TypeVar("T")
#: Seconds between two tries: doubling from the first, at most the last.
BACKOFF = (0.5, 15.0)


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a database that does not answer raises through Optuna's storage: Optuna wraps most of it."""
    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    return StorageInternalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError


class DatabaseAway(UserError):
    """The study database did not answer within the limit."""


class Outage:
    """Since when this process's study database has not answered (None while it answers)."""

    def __init__(self, limit_s: float, meanwhile: str, logger: logging.Logger = log) -> None:
        self.limit_s = limit_s
        self.meanwhile = meanwhile  # what goes on during an outage, for its first line
        self.log = logger
        self.since: float | None = None

    def failed(self, error: BaseException) -> None:
        """A call failed: the outage starts here (one line), or goes on."""
        if self.since is None:
            self.since = time.monotonic()
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            self.log.warning("optuna: the study database does not answer (%s); %s", first[:200], self.meanwhile)

    def answered(self) -> None:
        """A call went through: an outage ends here (one line)."""
        if self.since is not None:
            self.log.warning("optuna: the study database answers again after %.0f s", time.monotonic() - self.since)
            self.since = None

    @property
    def over(self) -> bool:
        """Whether the outage has lasted past the limit."""
        return self.since is not None and time.monotonic() - self.since > self.limit_s

    def check(self, what: str) -> None:
        """``DatabaseAway`` if the outage has lasted past the limit (``what``: what could not be done)."""
        if self.over:
            raise DatabaseAway(f"the study database has not answered for {self.limit_s:.0f} s (search.outage_limit_s) "
                               f"while {what}: stopping; the same command resumes the study")

    def wait(self, tries: int) -> None:
        """Sleep before try number ``tries + 1``: doubling from BACKOFF[0], at most BACKOFF[1]."""
        time.sleep(min(BACKOFF[0] * 2**tries, BACKOFF[1]))

    def wait_until(self, step: Callable[[], bool]) -> None:
        """Call ``step`` until it says it is done, waiting with backoff between two calls."""
        tries = 0
        while not step():
            self.wait(tries)
            tries += 1

    def retry(self, call: Callable[[], T], what: str) -> T:
        """``call()``, tried again with backoff while the database does not answer; ``DatabaseAway`` past the limit."""
        errors = storage_errors()
        tries = 0
        while True:
            try:
                result = call()
            except errors as error:
                self.failed(error)
                self.check(what)
                self.wait(tries)
                tries += 1
                continue
            self.answered()
            return result


class Backlog:
    """Writes to the study database that wait while it does not answer, written in order when it answers.

    Neither a job's training nor the sweeper's pool stops for the database, and nothing reaches the study
    out of order. Past the outage's limit, a backlog with a ``giving_up`` line drops its writes and logs
    the line (a job: its run's record tells the trial later); one without raises ``DatabaseAway`` (the
    sweeper: the same command resumes the study).
    """

    def __init__(self, outage: Outage, giving_up: str | None = None) -> None:
        self.outage = outage
        self.giving_up = giving_up
        self.waiting: deque[tuple[Callable[[], object], str]] = deque()  # each write, and what it does
        self.given_up = False

    def put(self, write: Callable[[], object], what: str) -> bool:
        """Queue ``write`` (``what`` it does, for DatabaseAway's line) after whatever waits, and write what it
        can; whether everything is written."""
        if self.given_up:
            return False
        self.waiting.append((write, what))
        return self.flush()

    def flush(self) -> bool:
        """Write what waits, in order; False while the database does not answer."""
        while self.waiting:
            write, what = self.waiting[0]
            try:
                write()
            except storage_errors() as error:
                self.outage.failed(error)
                if self.giving_up is None:
                    self.outage.check(what)
                elif self.outage.over:
                    self.given_up = True
                    self.waiting.clear()
                    self.outage.log.warning(self.giving_up)
                return False
            self.waiting.popleft()
        self.outage.answered()
        return True
