"""Errors a user can fix: a mistake in a setting, a file or a directory, with a one-line message.

Library code raises them; entry points turn them into one line and exit code 2
(``cli.exit_on_error``).
"""

from __future__ import annotations

from typing import Any

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A setting, file or directory that cannot work; the message is one line."""


class ConfigError(UserError):
    """A user-supplied setting is out of range: ``key=value: allowed``."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r}: {allowed}")
        self.key = key
