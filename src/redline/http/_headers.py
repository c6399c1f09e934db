"""Reading header fields: one pass over a header list, then lookups by name.

A request crosses several decisions in HTTPCacheMiddleware (is it personal, is it conditional,
does it bypass the response cache, what does its key hold), each asking for a few fields.
Scanning the ASGI header list once per question made those scans the middleware's largest
cost, so a request's headers are read once into :class:`HeaderFields`, lowercased name to
values in order, and every later question is a dict lookup. Values stay as they came (bytes
from ASGI) and are decoded as latin-1 only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# A Mapping (str keys, e.g. Starlette's Headers) or ASGI-style (name, value) pairs, str or bytes.
Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


def _pairs(headers: Headers) -> Iterable[tuple[str | bytes, str | bytes]]:
    """``headers`` as (name, value) pairs. ASGI header lists are the common case and on every
    request's path: tested first, since the Mapping ABC check costs more than the scan."""
    if type(headers) is list:
        return headers
    return headers.items() if isinstance(headers, Mapping) else headers


class HeaderFields(dict[bytes, list[str | bytes]]):
    """Header fields by lowercased name (bytes), each with its values in order."""

    __slots__ = ()

    def __init__(self, headers: Headers = ()) -> None:
        # dict.__init__ is not called: with no arguments it does nothing.
        get = self.get
        for name, value in _pairs(headers):
            key = (name if type(name) is bytes else name.encode("latin-1")).lower()
            found = get(key)
            if found is None:
                self[key] = [value]
            else:
                found.append(value)

    def values_of(self, name: bytes) -> list[str]:
        """Every value of the field ``name`` (lowercase bytes), decoded as latin-1."""
        return [
            value.decode("latin-1") if type(value) is bytes else value
            for value in self.get(name, ())
        ]

    def joined(self, name: bytes) -> str:
        """The field's values as one comma-separated value ('' when absent), RFC 9110 §5.3."""
        found = self.get(name)
        if not found:
            return ""
        if len(found) == 1:
            value = found[0]
            return value.decode("latin-1") if type(value) is bytes else value
        return ", ".join(self.values_of(name))


def header_fields(headers: Headers) -> HeaderFields:
    """``headers`` as :class:`HeaderFields`; returned as is when it already is one."""
    return headers if type(headers) is HeaderFields else HeaderFields(headers)


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of one field, case-insensitively, in order; bytes are decoded as latin-1."""
    wanted = name.lower()
    if type(headers) is HeaderFields:
        return headers.values_of(wanted.encode("latin-1"))
    wanted_bytes = wanted.encode("latin-1")
    found = []
    for key, value in _pairs(headers):
        if type(key) is bytes:
            if key != wanted_bytes and key.lower() != wanted_bytes:
                continue
        elif key.lower() != wanted:
            continue
        found.append(value.decode("latin-1") if type(value) is bytes else value)
    return found
