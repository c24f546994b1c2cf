"""Errors a user can cause and fix, and the did-you-mean hint their messages end with.

Every ``SeeknalError`` carries one line that names the thing at fault and the fix;
the CLI prints it without a traceback and exits non-zero.  Bugs stay ordinary
exceptions so they keep their tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterable


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` for the closest candidate, or an empty string."""
    import difflib  # only for an error message

    match = difflib.get_close_matches(str(word), sorted(candidates), n=1, cutoff=0.6)
    return f" — did you mean '{match[0]}'?" if match else ""


class SeeknalError(Exception):
    """A user error: ``str(exc)`` is one line naming the thing and the fix."""

    #: the CLI's exit code for it (2: usage or configuration, nothing changed)
    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ProjectError(SeeknalError):
    """The project folder, a node definition or its SQL template is invalid."""


class StateNotRecordedError(SeeknalError):
    """Rows were committed but recording them in the state store failed: the intervals
    are not marked complete, so re-running recomputes and replaces them (safe)."""

    exit_code = 3
