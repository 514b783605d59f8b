"""How entry points end: one line and an exit code for a user's mistake or an interrupt, never a traceback.

Library code raises; only entry points (``train.py``, the console scripts, the
Hydra callbacks that run before any job) exit. A ``UserError`` is printed as
``PROG: error: MESSAGE`` with exit code 2; a run stopped cleanly on a signal
(``stops.Interrupted``) exits 128 + the signal with how to resume it; a second
signal mid-epoch exits 130.
"""

from __future__ import annotations

import atexit
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hreg.errors import USER_ERROR_EXIT, UserError
from hreg.stops import ABORTED_EXIT, Interrupted

log = logging.getLogger("hreg")


@contextmanager
def exit_on_error(prog: str) -> Iterator[None]:
    """For entry points: a UserError exits 2 with one line; an interrupted run exits 128 + its signal."""
    try:
        yield
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except Interrupted as stop:
        log.warning("%s; %s", stop, stop.resume or "its last checkpoint is saved")
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        log.warning("aborted mid-epoch; the last periodic checkpoint stands")
        sys.exit(ABORTED_EXIT)


def freeze_at_exit() -> None:
    """For entry points that load torch: at exit, leave the objects still alive to the operating system.

    Python's last garbage collections at exit walk every object of the process, and torch (with
    ``torch._dynamo``, which torch's optimizers import) brings in millions, and walking them takes a
    noticeable share of a short run's process (``benchmarks/README.md``, start-up). ``gc.freeze`` in an
    atexit handler leaves them out of those collections. The other atexit handlers still run (logging's
    flush and close of its files among them), and hreg closes its own files (event files, checkpoints,
    records) itself, before the end.
    """
    atexit.register(gc.freeze)
