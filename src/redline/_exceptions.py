"""The root of redline's exception hierarchy."""


class RedlineError(Exception):
    """Base class for every error redline raises."""
