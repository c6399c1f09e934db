"""The monitor's exceptions, one hierarchy rooted at redline.RedlineError."""

from redline._exceptions import RedlineError


class RedlineMonitorError(RedlineError):
    """Base class for every error the monitor raises."""


class MetricError(RedlineMonitorError, ValueError):
    """A metric is defined or used wrongly: a bad name, label, bucket list or value."""


class TimerError(RedlineMonitorError, RuntimeError):
    """A timer was ended twice, or ``end(name)`` found no timer of that name started here."""


class SnapshotError(RedlineMonitorError):
    """The snapshot directory for multi-process metrics is missing or unusable."""
