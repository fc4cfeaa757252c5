"""The one exception family of auxsearch.

Every error a user can cause (a bad YAML key, an unknown name, an impossible
value) is raised as an :class:`AuxsearchError`. ``auxsearch.cli.main`` is the
only place that catches it: it prints one line and exits with code 2.
"""

from __future__ import annotations


class AuxsearchError(Exception):
    """Base class of every error auxsearch raises on purpose."""


class ConfigError(AuxsearchError):
    """A value in a design, study or search-space file breaks a rule.

    ``key`` is the dotted path of the offending key (``aux.0.momentum``) so
    that the message points at the line to fix.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


def known(names) -> str:
    """Format a list of allowed names for an error message."""
    return ", ".join(sorted(names))


class StorageError(AuxsearchError):
    """The study's storage cannot be opened or written (a bad URL, a server down, a full disk)."""


class RunError(AuxsearchError):
    """A search cannot go on for a reason found while it runs (not a bad file): trials failing in a row."""
