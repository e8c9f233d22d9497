"""The one exception type for mistakes a user can fix (bad config, bad input file, bad option)."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input; the CLI prints its message on one line and exits with 2.

    Args:
        message: What is wrong, naming the file and the field.
        fix: What to do about it (appended to the message).
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} -- {fix}" if fix else message)
