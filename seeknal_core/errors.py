"""Errors a user can cause and fix.

Every ``SeeknalError`` carries one line that names the thing at fault and the fix;
the CLI prints it without a traceback and exits non-zero.  Bugs stay ordinary
exceptions so they keep their tracebacks.
"""

from __future__ import annotations


class SeeknalError(Exception):
    """A user error: ``str(exc)`` is one line naming the thing and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ProjectError(SeeknalError):
    """The project folder, a node definition or its SQL template is invalid."""
