"""The cache's exceptions, one hierarchy rooted at redline.RedlineError."""

from redline._exceptions import RedlineError


class RedlineCacheError(RedlineError):
    """Base class for every error the cache raises."""


class CodecError(RedlineCacheError):
    """A value could not be encoded, or stored bytes could not be decoded."""


class CacheKeyError(RedlineCacheError, ValueError):
    """A cache key is malformed."""
