"""Cache-Control policies: building, parsing, and whether a shared cache may store a response."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from string import Formatter
from typing import Any, Literal
from urllib.parse import quote

from redline._exceptions import RedlineError
from redline.http._headers import HeaderFields, Headers, header_fields
from redline.http._surrogate import SurrogateKeyError, check_surrogate_tags

Visibility = Literal["public", "private", "no-store"]

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
    ``validator_ttl`` keeps the validator's answer that many seconds in the response cache,
    tagged with the route's tags, so a 304 skips even the validator until a write path
    invalidates a tag (``cache.invalidate_tags`` or ``Purger.purge``); None asks every time.
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
    validator_ttl: int | None = None
    # Derived once from the fields above by __post_init__, so that no request rebuilds them,
    # each indexed by "personal" (a credentialed request, or a response setting a cookie, which
    # a public policy answers as private): the Cache-Control value, and the headers (with their
    # fields, shared: never changed) a response without headers of its own gets; also the Vary
    # value and the request fields named by vary, lowercased.
    _cache_control: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)
    _vary_value: bytes | None = field(init=False, repr=False, compare=False)
    _vary_fields: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _bare: tuple[tuple[tuple[bytes, bytes], ...], ...] = field(
        init=False, repr=False, compare=False
    )
    _bare_fields: tuple[HeaderFields, HeaderFields] = field(init=False, repr=False, compare=False)

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
        self._check_validator_ttl()
        self._check_consistent()
        self._derive()

    def _derive(self) -> None:
        own = self.header().encode("latin-1")
        if self.visibility == "public":
            # Secure by default: a response to a credentialed request, or one setting a cookie,
            # may be one user's data; a shared cache must never hand it to another. The browser
            # may still keep it for max-age, so only public/s-maxage go.
            personal = self._render("private", None).encode("latin-1")
        else:
            personal = own
        vary = self.vary_header()
        vary_value = None if vary is None else vary.encode("latin-1")
        bare = tuple(
            ((b"cache-control", value),) + (() if vary_value is None else ((b"vary", vary_value),))
            for value in (own, personal)
        )
        set_field = object.__setattr__
        set_field(self, "_cache_control", (own, personal))
        set_field(self, "_vary_value", vary_value)
        set_field(self, "_vary_fields", tuple(n.lower().encode("latin-1") for n in self.vary))
        set_field(self, "_bare", bare)
        set_field(self, "_bare_fields", tuple(HeaderFields(list(h)) for h in bare))

    def _check_validator_ttl(self) -> None:
        ttl = self.validator_ttl
        if ttl is None:
            return
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise CachePolicyError(
                f"CachePolicy.validator_ttl={ttl!r}: must be a whole number of seconds > 0, or None"
            )
        if self.validator is None:
            raise CachePolicyError("CachePolicy.validator_ttl remembers a validator: set validator")
        if self.visibility == "no-store" or (self.visibility == "private" and not self.vary_user):
            raise CachePolicyError(
                f"CachePolicy.validator_ttl on a {self.visibility!r} policy: answers are remembered"
                " in the response cache, which keeps only public responses, or private ones per"
                " user with vary_user"
            )
        if not self.tags:
            # Tags are how a write reaches a remembered answer; without them it would be
            # wrong until the TTL ran out.
            raise CachePolicyError(
                "CachePolicy.validator_ttl needs tags, which write paths invalidate to make the"
                " remembered validator current again, e.g. tags=('fund:{fund_id}',)"
            )

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
        return self._render(self.visibility, self.s_maxage)

    def _render(self, visibility: str, s_maxage: int | None) -> str:
        parts: list[str] = [visibility]
        if self.no_cache:
            parts.append("no-cache")
        if self.must_revalidate:
            parts.append("must-revalidate")
        for name in _AGE_FIELDS:
            value = s_maxage if name == "s_maxage" else getattr(self, name)
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


def _split_list(value: str) -> Iterable[str]:
    """Split a comma-separated field value, keeping commas inside quoted strings."""
    if '"' not in value:
        return value.split(",")
    return _split_quoted(value)


def _split_quoted(value: str) -> Iterable[str]:
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
    return dict(_directives(value if isinstance(value, str) else ",".join(value)))


@lru_cache(maxsize=512)
def _directives(text: str) -> dict[str, str | int | None]:
    """parse_cache_control's work, kept per value: a route's Cache-Control repeats on every
    response. The dict is shared between callers, who must not change it."""
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
    request = header_fields(request_headers)
    response = header_fields(response_headers)
    request_cc = (
        _directives(request.joined(b"cache-control")) if b"cache-control" in request else {}
    )
    response_cc = _directives(response.joined(b"cache-control"))
    # RFC 9111 §3: no-store in either the request or the response forbids storing.
    if "no-store" in request_cc or "no-store" in response_cc:
        return False
    # RFC 9111 §5.2.2.7 lets a shared cache store private="field" responses minus those
    # fields; redline refuses any private response outright, the safe reading.
    if "private" in response_cc:
        return False
    # Not an RFC rule but redline's: a cookie set for one client must never reach another.
    if b"set-cookie" in response:
        return False
    # RFC 9111 §4.1: Vary: * never matches a later request, so storing it is pointless.
    if b"vary" in response and "*" in {
        v.strip() for line in response.values_of(b"vary") for v in line.split(",")
    }:
        return False
    if b"authorization" in request and not (
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
        or b"expires" in response
    )
