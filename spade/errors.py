"""Errors meant for the user: they print as a message, not a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad parameter, missing file, unreadable input)."""
