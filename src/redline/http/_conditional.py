"""Validators and conditional requests: ETags, HTTP dates, and when to answer 304."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal

from redline.http._headers import Headers, header_fields


def strong_etag(body: bytes) -> str:
    """A quoted strong ETag: blake2b-128 of the body, base64url without padding."""
    return strong_etag_bytes(body).decode("ascii")


def strong_etag_bytes(body: bytes) -> bytes:
    """:func:`strong_etag` as the bytes of a header value."""
    # A content hash, unlike hash(), is the same in every process and after every restart.
    # 16 bytes are 22 base64 characters and "==" of padding, dropped.
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return b'"' + base64.urlsafe_b64encode(digest)[:22] + b'"'


def weak_etag(body: bytes) -> str:
    """A weak ETag (W/"..."), e.g. of the uncompressed body when compression changes the bytes."""
    return "W/" + strong_etag(body)


# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text;
# an entry ends at optional whitespace followed by a comma or the end of the value. The weak
# prefix is case-sensitive "W/"; "w/" is malformed.
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"(?=[ \t]*(?:,|\Z))')
_SEPARATION = re.compile(r"[ \t,]*")


def parse_etags(if_none_match: str | None) -> list[str] | Literal["*"]:
    """The entity-tags of an If-None-Match/If-Match value, or "*"; malformed entries are dropped."""
    if if_none_match is None:
        return []
    text = if_none_match
    if text.strip() == "*":
        return "*"
    tags: list[str] = []
    end = len(text)
    i = _SEPARATION.match(text).end()
    while i < end:
        tag = _ENTITY_TAG.match(text, i)
        if tag is not None:
            tags.append(tag.group())
            i = tag.end()
        else:
            # Malformed: the entry is skipped up to the next comma.
            comma = text.find(",", i)
            i = end if comma == -1 else comma
        i = _SEPARATION.match(text, i).end()
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
    fields = header_fields(request_headers)
    if b"if-match" in fields or b"if-unmodified-since" in fields:
        # §13.2.2 steps 1-2 come first and may demand 412; leave them to the handler.
        return False
    if b"if-none-match" in fields:
        # §13.1.3: If-Modified-Since is ignored whenever If-None-Match is present.
        return etag is not None and etag_matches(fields.joined(b"if-none-match"), etag)
    if_modified_since = fields.get(b"if-modified-since")
    if last_modified is None or if_modified_since is None or len(if_modified_since) != 1:
        return False
    since = parse_http_date(fields.joined(b"if-modified-since"))
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
