"""The load engine's exceptions, one hierarchy rooted at redline.RedlineError."""

from __future__ import annotations

from redline._exceptions import RedlineError


class RedlineLoadError(RedlineError):
    """Base class for every error the load engine raises."""


class PlanError(RedlineLoadError):
    """A plan is invalid; says which file, line and field, and what was wrong."""

    def __init__(
        self, message: str, *, file: str, line: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.file = str(file)
        self.line = line
        self.field = field
        where = self.file if line is None else f"{self.file}:{line}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
