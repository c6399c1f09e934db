"""Surrogate keys: the cache tags a response carries so that a CDN can purge it by tag.

Each CDN reads its own header: Fastly ``Surrogate-Key`` (space separated), Cloudflare
``Cache-Tag`` (comma separated) and Varnish's xkey vmod ``xkey`` (space separated). A tag must
therefore hold neither whitespace nor commas, and only printable ASCII so that every CDN reads
the same bytes; the purge adapters validate with :func:`check_surrogate_tags` too, so a tag
that could be emitted can always be purged. CDNs cap the header (Fastly at 16 KB), so an
over-long header is refused rather than silently truncated, which would leave responses that
no purge reaches.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from redline._exceptions import RedlineError

SURROGATE_STYLES = ("surrogate-key", "cache-tag", "xkey")
MAX_TAG_BYTES = 1024
MAX_HEADER_BYTES = 16 * 1024
_SEPARATORS = {"surrogate-key": " ", "cache-tag": ",", "xkey": " "}


class SurrogateKeyError(RedlineError, ValueError):
    """A surrogate key (cache tag) or the header built from them is invalid."""


def check_surrogate_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Validate tags for every CDN's header; return them de-duplicated, first occurrence first."""
    if isinstance(tags, (str, bytes)):
        raise SurrogateKeyError(
            f"tags={tags!r}: give an iterable of tags such as ('fund:7',), not one string"
        )
    checked: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise SurrogateKeyError(f"surrogate key {tag!r}: must be a non-empty str")
        bad = next((c for c in tag if not 0x21 <= ord(c) <= 0x7E or c == ","), None)
        if bad is not None:
            raise SurrogateKeyError(
                f"surrogate key {tag!r}: {bad!r} is not allowed; use printable ASCII without"
                " whitespace or commas, which CDNs use to separate keys"
            )
        if len(tag) > MAX_TAG_BYTES:
            raise SurrogateKeyError(
                f"surrogate key {tag[:40]!r}...: {len(tag)} bytes, over {MAX_TAG_BYTES}"
            )
        checked[tag] = None
    return tuple(checked)


def surrogate_headers(
    tags: Iterable[str], styles: Iterable[str] = SURROGATE_STYLES
) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs carrying ``tags`` in each CDN style; none when there are no tags."""
    if type(tags) is tuple and type(styles) is tuple:
        try:
            return list(_tuple_headers(tags, styles))
        except TypeError:
            pass  # an unhashable tag: the checks below name it
    return _build_headers(tags, styles)


@lru_cache(maxsize=256)
def _tuple_headers(
    tags: tuple[str, ...], styles: tuple[str, ...]
) -> tuple[tuple[bytes, bytes], ...]:
    # A route's tags repeat on every response it sends: build (and check) their headers once.
    return tuple(_build_headers(tags, styles))


def _build_headers(tags: Iterable[str], styles: Iterable[str]) -> list[tuple[bytes, bytes]]:
    checked = check_surrogate_tags(tags)
    styles = check_surrogate_styles(styles)
    if not checked:
        return []
    headers = []
    for style in styles:
        value = _SEPARATORS[style].join(checked).encode("ascii")
        if len(value) > MAX_HEADER_BYTES:
            raise SurrogateKeyError(
                f"{style} header of {len(checked)} tags is {len(value)} bytes, over the"
                f" {MAX_HEADER_BYTES} bytes CDNs accept; tag by a coarser key (e.g. 'funds')"
            )
        headers.append((style.encode("ascii"), value))
    return headers


def check_surrogate_styles(styles: Iterable[str]) -> tuple[str, ...]:
    """Validate a choice of header styles, lowercased, e.g. ("xkey",)."""
    if isinstance(styles, str):
        raise SurrogateKeyError(f"styles={styles!r}: give a tuple such as ('xkey',)")
    chosen = tuple(dict.fromkeys(str(style).lower() for style in styles))
    unknown = [style for style in chosen if style not in _SEPARATORS]
    if unknown:
        raise SurrogateKeyError(
            f"surrogate key styles {unknown}: choose from {', '.join(SURROGATE_STYLES)}"
        )
    return chosen
