"""Errors a user can fix, and how entry points turn them into one line and an exit code; how they exit.

Library code raises; only entry points (``train.py``, the console scripts, the
Hydra callbacks that run before any job) exit. A ``UserError`` is a mistake in
a setting, a file or a directory: its message is one line, printed as
``PROG: error: MESSAGE`` with exit code 2 and no traceback.
"""

from __future__ import annotations

import atexit
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("hreg")

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A setting, file or directory that cannot work; the message is one line."""


class ConfigError(UserError):
    """A user-supplied setting is out of range: ``key=value: allowed``."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r}: {allowed}")
        self.key = key


class RunInterrupted(Exception):
    """A run stopped cleanly on a signal; the process should exit with ``exit_code`` (128 + the signal)."""

    def __init__(self, exit_code: int, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.exit_code = exit_code


@contextmanager
def exit_on_error(prog: str) -> Iterator[None]:
    """For entry points: a UserError exits 2 with one line; an interrupted run exits 128 + its signal."""
    try:
        yield
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except RunInterrupted as stop:
        log.warning("%s", stop)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        log.warning("aborted mid-epoch; the last periodic checkpoint stands")
        sys.exit(130)


def freeze_at_exit() -> None:
    """For entry points that load torch: at exit, leave the objects still alive to the operating system.

    Python's last garbage collections at exit walk every object of the process, and torch (with
    ``torch._dynamo``, which torch's optimizers import) brings in millions: measured on this project's
    2-core machine, a one-epoch ``train.py`` took 5.70 s with them and 4.67 s without (medians of 6,
    alternating; README, "Start-up"). ``gc.freeze`` in an
    atexit handler leaves them out of those collections. The other atexit handlers still run (logging's
    flush and close of its files among them), and hreg closes its own files (event files, checkpoints,
    records) itself, before the end.
    """
    atexit.register(gc.freeze)
