"""Atomic file writes: a sibling ``.partial`` file is written, then renamed over the target.

A reader never sees half a file and a crash never leaves one: the rename is
atomic, so the target holds either its old content or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` at once; ``durable`` also flushes it to disk before the rename."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(partial, path)
