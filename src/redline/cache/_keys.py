"""Key layout in Redis, key validation, over-long key hashing and glob matching.

Every Redis key the cache writes lives under one prefix per cache,
``{prefix}:{namespace}:{version}:``, followed by ``k:`` for entries, ``t:`` for tag clocks
and ``l:`` for load locks.
Bumping ``version`` orphans every entry at once (they expire by TTL), which is how a deploy
that changes the shape of cached values stays safe.

Redis glob matching is written here because :mod:`fnmatch` differs from Redis on backslash
escapes, and L1 must select exactly the keys that ``SCAN MATCH`` selects in L2.
"""

from __future__ import annotations

import hashlib
import re

from redline.cache._exceptions import CacheKeyError

_HASH_MARK = "#h:"


class KeySpace:
    """Maps user keys and tags to Redis keys for one cache."""

    __slots__ = ("prefix", "entries", "tags", "locks", "max_key_length")

    def __init__(
        self, namespace: str, version: int | str, prefix: str, max_key_length: int
    ) -> None:
        for field, value in (("namespace", namespace), ("prefix", prefix)):
            if not isinstance(value, str) or not value or any(c in value for c in "*?[]\\"):
                raise CacheKeyError(
                    f"{field}={value!r}: must be a non-empty string without glob characters *?[]\\"
                )
        if max_key_length < 32:
            raise CacheKeyError(f"max_key_length={max_key_length}: must be at least 32")
        self.prefix = f"{prefix}:{namespace}:{version}:"
        self.entries = self.prefix + "k:"
        self.tags = self.prefix + "t:"
        self.locks = self.prefix + "l:"
        self.max_key_length = max_key_length

    def local(self, key: str) -> str:
        """Return the L1 form of ``key``: the key itself, or a hashed form when over-long."""
        if type(key) is str and len(key) <= self.max_key_length:
            return key
        if type(key) is not str:
            raise CacheKeyError(f"cache key {key!r}: must be str, not {type(key).__name__}")
        # Keep a readable head so that prefix patterns such as "user:42:*" still match.
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return key[: self.max_key_length - len(digest) - len(_HASH_MARK)] + _HASH_MARK + digest

    def entry(self, local_key: str) -> str:
        return self.entries + local_key

    def tag(self, tag: str) -> str:
        return self.tags + tag

    def lock(self, local_key: str) -> str:
        return self.locks + local_key


def check_tags(tags: object) -> tuple[str, ...]:
    """Validate a tags argument and return it as a sorted, de-duplicated tuple."""
    if isinstance(tags, str):
        tags = (tags,)
    try:
        items = tuple(tags)  # type: ignore[arg-type]
    except TypeError:
        raise CacheKeyError(f"tags={tags!r}: must be an iterable of str") from None
    for tag in items:
        if type(tag) is not str or not tag:
            raise CacheKeyError(f"tag {tag!r} in tags={items!r}: must be a non-empty str")
        if len(tag) > 1024:
            raise CacheKeyError(f"tag {tag[:40]!r}...: longer than 1024 characters")
    return tuple(sorted(set(items)))


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis glob (``*``, ``?``, ``[...]``, ``[^...]``, ``\\x``) to a regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith("^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def escape_glob(text: str) -> str:
    """Escape ``text`` so that Redis glob matching treats it literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
