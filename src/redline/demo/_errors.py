"""The demo application's exceptions, rooted at ``redline.RedlineError``."""

from redline import RedlineError


class DemoError(RedlineError):
    """Base class for every error the reference application raises."""


class DemoConfigError(DemoError, ValueError):
    """Settings, a DSN or a seed scale that cannot work; the message names the field."""


class SchemaError(DemoError):
    """The database is not at the schema revision the chosen settings need."""
