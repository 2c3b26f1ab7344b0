"""Errors users can act on.

Every error says what went wrong, why (where known) and the next step, and renders as one line.
The CLI maps ``exit_code`` to the process exit status: 2 for bad usage or bad input, 3 for a
check that did not pass. Anything that is not an ``AscendError`` is a bug (exit 1).
"""

from __future__ import annotations


class AscendError(Exception):
    """Base class: ``what`` happened, ``why`` (optional), ``fix`` (the next step, optional)."""

    exit_code = 2

    def __init__(self, what: str, *, why: str | None = None, fix: str | None = None):
        self.what = what
        self.why = why
        self.fix = fix
        super().__init__(self.line())

    def lines(self) -> list[str]:
        """All problems, one line each (most errors have exactly one)."""
        return [self.line()]

    def line(self) -> str:
        text = self.what
        if self.why:
            text += f": {self.why}"
        if self.fix:
            text += f" — {self.fix}"
        return " ".join(text.split())  # always one line


class RecipeError(AscendError):
    """A recipe file, override or cross-field rule is wrong.

    ``problems`` carries every problem found in one pass (each already one line), so a user
    fixes a recipe in one round trip instead of one error per run.
    """

    def __init__(self, what: str, *, why: str | None = None, fix: str | None = None,
                 problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(what, why=why, fix=fix)

    def lines(self) -> list[str]:
        return self.problems or [self.line()]

    def __str__(self) -> str:
        return "\n".join(self.lines())


class PlanError(AscendError):
    """The requested layout is impossible (bad divisibility, unknown chip, ...)."""


class CheckpointError(AscendError):
    """A checkpoint directory or file is missing, malformed or inconsistent."""


class ConvertError(AscendError):
    """A conversion cannot proceed as asked."""


class ServeError(AscendError):
    """Launching or talking to an engine failed."""


class SmokeError(AscendError):
    """The smoke suite cannot run (bad endpoint, bad arguments)."""


class FetchError(AscendError):
    """A download or completeness check cannot proceed."""


class BackendUnavailable(AscendError):
    """An operator backend (e.g. torch_npu) cannot be loaded on this host."""


class CheckFailed(AscendError):
    """A check ran and did not pass (plan does not fit, verify mismatch, smoke failure)."""

    exit_code = 3


def first_names(names: list[str], shown: int = 3) -> str:
    """The first few names of a list for a one-line message: ``a, b, c ...``."""
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")
