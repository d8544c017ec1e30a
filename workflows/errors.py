"""Errors of the workflow language.

Every error says where (file and field path), what is wrong, and what to write
instead, so ``sluice validate`` can print one line per problem::

    SluiceError
      SpecError        file: field.path: what is wrong (what to write)
      SpecErrors       every SpecError found while loading, reported together
      PatternError     an event pattern that EventBridge would refuse
      ScheduleError    a cron/rate expression or time zone that cannot fire
      TemplateError    a template that fails to compile or to render
      UnitError        a duration or size that cannot be used (also a ValueError)
      InputError       run input that does not satisfy the workflow's params
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal


class SluiceError(Exception):
    """Base class of every error Sluice raises on purpose."""


class SpecError(SluiceError):
    """One problem in one workflow file, pinned to a field path."""

    def __init__(self, file: str, path: str, problem: str, hint: str = "") -> None:
        self.file = file
        self.path = path
        self.problem = problem
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.problem}" + (f" ({self.hint})" if self.hint else "")


class SpecErrors(SluiceError):
    """All the problems found in a load, so a user fixes them in one pass."""

    def __init__(self, errors: Iterable[SpecError]) -> None:
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class PatternError(SluiceError):
    """An event pattern that cannot be compiled; the message says which key and why."""


class ScheduleError(SluiceError):
    """A schedule expression or time zone that is not valid; the message gives a valid form.

    ``hint`` is a replacement that parses (an expression, or a time zone name when ``field`` is
    ``"timezone"``), so a caller can print it as the "what to write" part of a one-line error.
    """

    def __init__(
        self, problem: str, hint: str = "", field: Literal["schedule", "timezone"] = "schedule"
    ) -> None:
        self.problem = problem
        self.hint = hint
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.problem + (f" (write {self.hint})" if self.hint else "")


class TemplateError(SluiceError):
    """A template that does not compile, or that failed to render against a run's context."""


class UnitError(SluiceError, ValueError):
    """A duration or size that cannot be used.

    ``form_ok`` is true when the value was written in an accepted form but is out of bounds
    (negative, not finite, too large), so the message says which bound rather than the forms.
    """

    def __init__(self, message: str, *, form_ok: bool = False) -> None:
        self.form_ok = form_ok
        super().__init__(message)


class InputError(SluiceError):
    """Run input that does not match the workflow's params (names the param and the expected type)."""
