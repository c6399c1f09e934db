"""redline: makes Python web backends fast, and proves it."""

from redline._exceptions import RedlineError

__version__ = "0.1.0"

__all__ = ["RedlineError", "__version__"]
