"""Cache-Control policies: building, parsing, and whether a shared cache may store a response."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from typing import Any, Literal
from urllib.parse import quote

from redline._exceptions import RedlineError
from redline.http._surrogate import SurrogateKeyError, check_surrogate_tags

Visibility = Literal["public", "private", "no-store"]
# A Mapping (str keys, e.g. Starlette's Headers) or ASGI-style (name, value) pairs, str or bytes.
Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

_VISIBILITIES = ("public", "private", "no-store")
_AGE_FIELDS = ("max_age", "s_maxage", "stale_while_revalidate", "stale_if_error")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2**31.
_DELTA_MAX = 2**31
# RFC 9110 §15.1: status codes heuristically cacheable, minus 206: this cache does not combine
# partial content (RFC 9111 §3.3), so 206 and 304 are never stored.
_CACHEABLE_BY_DEFAULT = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# What a path parameter may put into a tag unescaped: printable ASCII but for the separators
# CDNs split on, and '%' itself so that an escaped value can never collide with a raw one.
_TAG_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",%")


class CachePolicyError(RedlineError, ValueError):
    """A CachePolicy's fields are invalid or contradict each other."""


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How one route's responses may be cached; ages are in seconds, None means absent.

    ``tags`` are templates such as ``"fund:{fund_id}"`` filled from the route's path parameters;
    they become surrogate-key headers and the response cache's invalidation tags.
    ``validator(request)`` returns the current ETag, version or last-modified time cheaply, so
    a matching conditional request is answered 304 without running the handler.
    ``vary_user(scope)`` returns the user a response belongs to; only then may responses to
    credentialed requests enter the response cache, keyed by that user.
    """

    visibility: Visibility = "private"
    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    must_revalidate: bool = False
    no_cache: bool = False
    immutable: bool = False
    vary: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    validator: Callable[[Any], Any] | None = None
    vary_user: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.visibility not in _VISIBILITIES:
            raise CachePolicyError(
                f"CachePolicy.visibility={self.visibility!r}: must be one of {_VISIBILITIES}"
            )
        for name in _AGE_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise CachePolicyError(
                    f"CachePolicy.{name}={value!r}: must be a whole number of seconds or None"
                )
            if value < 0:
                raise CachePolicyError(f"CachePolicy.{name}={value}: must be >= 0")
        if isinstance(self.vary, str):
            raise CachePolicyError(
                f"CachePolicy.vary={self.vary!r}: give a tuple of header names, e.g. ('Accept',)"
            )
        object.__setattr__(self, "vary", tuple(self.vary))
        for name in self.vary:
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise CachePolicyError(f"CachePolicy.vary: {name!r} is not a header field name")
        if "*" in self.vary and len(self.vary) > 1:
            raise CachePolicyError("CachePolicy.vary: '*' already varies on everything; use alone")
        if isinstance(self.tags, str):
            raise CachePolicyError(
                f"CachePolicy.tags={self.tags!r}: give a tuple of tags, e.g. ('fund:{{fund_id}}',)"
            )
        object.__setattr__(self, "tags", tuple(self.tags))
        for template in self.tags:
            _parse_tag(template)
        for name in ("validator", "vary_user"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise CachePolicyError(f"CachePolicy.{name}={value!r}: must be callable or None")
        self._check_consistent()

    def _check_consistent(self) -> None:
        if self.visibility == "no-store":
            set_fields = [n for n in _AGE_FIELDS if getattr(self, n) is not None]
            flags = ("must_revalidate", "no_cache", "immutable")
            set_fields += [n for n in flags if getattr(self, n)]
            if set_fields:
                raise CachePolicyError(
                    f"CachePolicy(visibility='no-store') cannot also set {', '.join(set_fields)}:"
                    " nothing is stored, so drop them or choose 'private'/'public'"
                )
        if self.visibility == "private" and self.s_maxage is not None:
            raise CachePolicyError(
                "CachePolicy.s_maxage is for shared caches, which 'private' forbids;"
                " use visibility='public' or drop s_maxage"
            )
        if self.must_revalidate and (
            self.stale_while_revalidate is not None or self.stale_if_error is not None
        ):
            # RFC 9111 §5.2.2.2: must-revalidate forbids serving stale, which is what these allow.
            raise CachePolicyError(
                "CachePolicy.must_revalidate forbids serving stale responses;"
                " drop stale_while_revalidate/stale_if_error or must_revalidate"
            )
        if self.immutable and (self.max_age is None or self.no_cache):
            # RFC 8246 §2: immutable only means something while the response is fresh.
            raise CachePolicyError(
                "CachePolicy.immutable needs max_age and no no_cache: it only applies while fresh"
            )

    def header(self) -> str:
        """The Cache-Control value, directives always in the same order."""
        parts: list[str] = [self.visibility]
        if self.no_cache:
            parts.append("no-cache")
        if self.must_revalidate:
            parts.append("must-revalidate")
        for name in _AGE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                directive = "s-maxage" if name == "s_maxage" else name.replace("_", "-")
                parts.append(f"{directive}={value}")
        if self.immutable:
            parts.append("immutable")
        return ", ".join(parts)

    def vary_header(self) -> str | None:
        """The Vary value, or None when the response does not vary."""
        return ", ".join(self.vary) or None

    def tags_for(self, path_params: Mapping[str, Any], route: str = "") -> tuple[str, ...]:
        """The tags with ``{param}`` filled from ``path_params``; ``route`` is named in errors.

        Characters a tag may not hold (whitespace, commas, non-ASCII, '%') are percent-encoded
        as UTF-8, the way ``urllib.parse.quote`` does, so write paths purge the same string.
        """
        rendered: dict[str, None] = {}
        for template in self.tags:
            parts = []
            for literal, name in _parse_tag(template):
                if name is None:
                    parts.append(literal)
                    continue
                if name not in path_params:
                    raise CachePolicyError(
                        f"CachePolicy.tags template {template!r} on route {route or '?'!r} needs"
                        f" path parameter {name!r}, but the route has"
                        f" {sorted(path_params) or 'none'}"
                    )
                parts.append(quote(str(path_params[name]), safe=_TAG_SAFE))
            rendered["".join(parts)] = None
        return tuple(rendered)


@lru_cache(maxsize=1024)
def _parse_tag(template: object) -> tuple[tuple[str, str | None], ...]:
    """A tag template as (literal, None) and (\"\", param name) parts, validated."""
    if not isinstance(template, str) or not template:
        raise CachePolicyError(f"CachePolicy.tags: {template!r} must be a non-empty str")
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise CachePolicyError(f"CachePolicy.tags template {template!r}: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if literal:
            try:
                check_surrogate_tags((literal,))
            except SurrogateKeyError as exc:
                raise CachePolicyError(f"CachePolicy.tags template {template!r}: {exc}") from None
            parts.append((literal, None))
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise CachePolicyError(
                f"CachePolicy.tags template {template!r}: {{{name}}} must name a path"
                " parameter plainly, as in 'fund:{fund_id}', without format spec or conversion"
            )
        parts.append(("", name))
    return tuple(parts)


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of one field, case-insensitively, in order; bytes are decoded as latin-1."""
    wanted = name.lower()
    # ASGI header lists are the common case and on every request's path: test them first,
    # the Mapping ABC check costs more than the scan.
    pairs = (
        headers
        if type(headers) is list
        else headers.items()
        if isinstance(headers, Mapping)
        else headers
    )
    wanted_bytes = wanted.encode("latin-1")
    found = []
    for key, value in pairs:
        if type(key) is bytes:
            if key != wanted_bytes and key.lower() != wanted_bytes:
                continue
        elif key.lower() != wanted:
            continue
        found.append(value.decode("latin-1") if type(value) is bytes else value)
    return found


def _split_list(value: str) -> Iterable[str]:
    """Split a comma-separated field value, keeping commas inside quoted strings."""
    item: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield "".join(item)
            item = []
            continue
        item.append(char)
    yield "".join(item)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_cache_control(value: str | Iterable[str] | None) -> dict[str, str | int | None]:
    """Directives of a Cache-Control value (or of several field lines), names lowercased.

    Digit arguments become ints (capped at 2**31), other arguments strings, bare directives None.
    """
    if value is None:
        return {}
    text = value if isinstance(value, str) else ",".join(value)
    directives: dict[str, str | int | None] = {}
    for item in _split_list(text):
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if not _TOKEN.fullmatch(name):
            continue
        # RFC 9111 §4.2.1: with conflicting duplicates "the first occurrence should be used"
        # (the alternative is treating the response as stale); first wins for every directive.
        if name in directives:
            continue
        if not sep:
            directives[name] = None
            continue
        # RFC 9111 §5.2: arguments may use token or quoted-string syntax, both are accepted.
        argument = _unquote(raw.strip())
        directives[name] = min(int(argument), _DELTA_MAX) if argument.isdigit() else argument
    return directives


def shared_cache_may_store(
    request_headers: Headers, response_status: int, response_headers: Headers
) -> bool:
    """Whether a shared cache (a CDN, or redline's response cache) may store this response."""
    request_cc = parse_cache_control(header_values(request_headers, "cache-control"))
    response_cc = parse_cache_control(header_values(response_headers, "cache-control"))
    # RFC 9111 §3: no-store in either the request or the response forbids storing.
    if "no-store" in request_cc or "no-store" in response_cc:
        return False
    # RFC 9111 §5.2.2.7 lets a shared cache store private="field" responses minus those
    # fields; redline refuses any private response outright, the safe reading.
    if "private" in response_cc:
        return False
    # Not an RFC rule but redline's: a cookie set for one client must never reach another.
    if header_values(response_headers, "set-cookie"):
        return False
    vary = {v.strip() for line in header_values(response_headers, "vary") for v in line.split(",")}
    # RFC 9111 §4.1: Vary: * never matches a later request, so storing it is pointless.
    if "*" in vary:
        return False
    if header_values(request_headers, "authorization") and not (
        # RFC 9111 §3.5: only these response directives allow sharing an authorised response.
        "public" in response_cc or "s-maxage" in response_cc or "must-revalidate" in response_cc
    ):
        return False
    if response_status < 200 or response_status == 206 or response_status == 304:
        return False
    if response_status in _CACHEABLE_BY_DEFAULT:
        return True
    # RFC 9111 §3: any other final status needs explicit freshness or public.
    return (
        "public" in response_cc
        or isinstance(response_cc.get("max-age"), int)
        or isinstance(response_cc.get("s-maxage"), int)
        or bool(header_values(response_headers, "expires"))
    )
