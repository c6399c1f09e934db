"""Validators and conditional requests: ETags, HTTP dates, and when to answer 304."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal

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


def _parse_http_date(value: str) -> datetime | None:
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
    since = _parse_http_date(if_modified_since[0])
    if since is None:
        return False
    # HTTP dates have one-second resolution, so a sub-second Last-Modified must be truncated.
    return _as_utc(last_modified).replace(microsecond=0) <= since
