"""Validators and conditional requests: ETags, HTTP dates, and when to answer 304."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal

from redline.http._policy import Headers, header_values


def strong_etag(body: bytes) -> str:
    """A quoted strong ETag: blake2b-128 of the body, base64url without padding."""
    # A content hash, unlike hash(), is the same in every process and after every restart.
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii") + '"'


def weak_etag(body: bytes) -> str:
    """A weak ETag (W/"..."), e.g. of the uncompressed body when compression changes the bytes."""
    return "W/" + strong_etag(body)


def _is_etagc(char: str) -> bool:
    # RFC 9110 §8.8.3: etagc = %x21 / %x23-7E / obs-text
    code = ord(char)
    return code == 0x21 or 0x23 <= code <= 0x7E or 0x80 <= code <= 0xFF


def parse_etags(if_none_match: str | None) -> list[str] | Literal["*"]:
    """The entity-tags of an If-None-Match/If-Match value, or "*"; malformed entries are dropped."""
    if if_none_match is None:
        return []
    if if_none_match.strip() == "*":
        return "*"
    tags: list[str] = []
    text = if_none_match
    i, end = 0, len(text)
    while i < end:
        while i < end and text[i] in " \t,":
            i += 1
        if i == end:
            break
        # RFC 9110 §8.8.3: the weak prefix is case-sensitive "W/"; "w/" is malformed.
        start = i
        if text.startswith("W/", i):
            i += 2
        close = text.find('"', i + 1) if i < end and text[i] == '"' else -1
        next_comma = text.find(",", i)
        if close != -1 and all(_is_etagc(c) for c in text[i + 1 : close]):
            after = close + 1
            while after < end and text[after] in " \t":
                after += 1
            if after == end or text[after] == ",":
                tags.append(text[start : close + 1])
                i = after
                continue
        i = end if next_comma == -1 else next_comma
    return tags


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match matches etag, by weak comparison (RFC 9110 §13.1.2)."""
    tags = parse_etags(if_none_match)
    if tags == "*":
        return True
    opaque = _opaque(etag)
    return any(_opaque(tag) == opaque for tag in tags)


def _as_utc(moment: datetime | float) -> datetime:
    if isinstance(moment, datetime):
        # A naive datetime is taken as UTC, as HTTP dates are.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return datetime.fromtimestamp(moment, UTC)


def http_date(moment: datetime | float) -> str:
    """An IMF-fixdate (RFC 9110 §5.6.7), e.g. 'Sun, 06 Nov 1994 08:49:37 GMT'."""
    return format_datetime(_as_utc(moment).replace(microsecond=0), usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """An HTTP date as an aware UTC datetime, or None when it does not parse."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _as_utc(parsed)


def not_modified(
    request_headers: Headers,
    etag: str | None = None,
    last_modified: datetime | float | None = None,
    *,
    method: str = "GET",
) -> bool:
    """Whether to answer 304 Not Modified, following RFC 9110 §13.2.2's precedence."""
    if method.upper() not in ("GET", "HEAD"):
        # Other methods turn a failed If-None-Match into 412, never 304: the handler decides.
        return False
    if header_values(request_headers, "if-match") or header_values(
        request_headers, "if-unmodified-since"
    ):
        # §13.2.2 steps 1-2 come first and may demand 412; leave them to the handler.
        return False
    if_none_match = header_values(request_headers, "if-none-match")
    if if_none_match:
        # §13.1.3: If-Modified-Since is ignored whenever If-None-Match is present.
        return etag is not None and etag_matches(", ".join(if_none_match), etag)
    if_modified_since = header_values(request_headers, "if-modified-since")
    if last_modified is None or len(if_modified_since) != 1:
        return False
    since = parse_http_date(if_modified_since[0])
    if since is None:
        return False
    # HTTP dates have one-second resolution, so a sub-second Last-Modified must be truncated.
    return _as_utc(last_modified).replace(microsecond=0) <= since


def validators_from(result: Any, context: Iterable[str] = ()) -> tuple[str | None, datetime | None]:
    """(ETag, Last-Modified) from what a route's ``validator`` returned.

    An ETag string (``'"v7"'`` or ``'W/"v7"'``) is used as is; a datetime is the last-modified
    time; any other str, bytes, int, UUID or Decimal is a version, hashed with ``context`` (the
    values of the request headers the response varies on, so each representation gets its own
    tag) into a stable strong ETag; a (version, datetime) pair gives both; None gives neither.
    """
    if isinstance(result, tuple) and len(result) == 2:
        version, modified = result
        if modified is not None and not isinstance(modified, datetime):
            raise TypeError(
                f"validator returned {result!r}: the second item must be a datetime or None"
            )
        return _etag_from(version, context), modified
    if isinstance(result, datetime):
        return None, result
    return _etag_from(result, context), None


def _etag_from(version: Any, context: Iterable[str]) -> str | None:
    if version is None:
        return None
    if isinstance(version, str) and version.startswith(('"', 'W/"')):
        if parse_etags(version) != [version]:
            raise ValueError(f"validator returned {version!r}, which is not one valid entity-tag")
        return version
    if isinstance(version, bytes):
        raw = b"b:" + version
    elif isinstance(version, str):
        raw = b"s:" + version.encode()
    elif isinstance(version, (int, uuid.UUID, Decimal)) and not isinstance(version, bool):
        raw = f"{type(version).__name__}:{version}".encode()
    else:
        raise TypeError(
            f"validator returned {version!r}: give an ETag string, a version (str, bytes, int,"
            " UUID, Decimal), a datetime, a (version, datetime) pair, or None"
        )
    for value in context:
        raw += b"\0" + value.encode("latin-1", "replace")
    return strong_etag(raw)
