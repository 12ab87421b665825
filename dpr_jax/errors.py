"""Errors that reach the user as one clear line, never as a deep traceback.

Every reader, loader and command raises :class:`DprJaxError` (or a subclass) for problems the user
can fix: bad input files, missing weights, wrong flags. The CLI prints ``error: <message>`` and exits
with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DprJaxError(Exception):
    """A problem the user can fix; its message is shown as is."""


class InputError(DprJaxError):
    """Bad content in an input file, located by path and (1-based) line and/or field."""

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"{where}: {what}")
