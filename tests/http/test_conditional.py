"""ETags, HTTP dates and not_modified (redline/http/_conditional.py)."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redline.http import (
    etag_matches,
    http_date,
    not_modified,
    parse_etags,
    strong_etag,
    weak_etag,
)

LAST_MODIFIED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
LM_HEADER = "Wed, 01 May 2024 12:00:00 GMT"


def test_strong_etag_is_quoted_base64url_without_padding():
    tag = strong_etag(b"hello")
    assert tag.startswith('"') and tag.endswith('"')
    opaque = tag[1:-1]
    assert len(opaque) == 22
    assert "=" not in opaque and "+" not in opaque and "/" not in opaque


def test_strong_etag_is_the_same_in_another_process():
    code = "from redline.http import strong_etag; print(strong_etag(b'hello'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == strong_etag(b"hello")


def test_weak_etag_has_the_weak_prefix_and_same_opaque_tag():
    assert weak_etag(b"x") == "W/" + strong_etag(b"x")


@given(st.binary())
def test_etag_is_stable_for_the_same_bytes(body):
    assert strong_etag(body) == strong_etag(bytes(body))


@given(st.binary(), st.binary())
def test_etag_differs_for_different_bytes(a, b):
    assert (strong_etag(a) == strong_etag(b)) == (a == b)


def test_parse_etags_handles_lists_weak_prefixes_and_whitespace():
    assert parse_etags(' "a" ,W/"b",\t"c,d" ') == ['"a"', 'W/"b"', '"c,d"']


def test_parse_etags_star():
    assert parse_etags(" * ") == "*"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('abc, "ok"', ['"ok"']),
        ('w/"lower", "ok"', ['"ok"']),
        ('"unterminated, "ok"', ['"ok"']),
        ('"a"junk, "ok"', ['"ok"']),
        ('"has space", "ok"', ['"ok"']),
        ('*, "ok"', ['"ok"']),
        ("", []),
        (None, []),
    ],
)
def test_parse_etags_ignores_malformed_entries(value, expected):
    assert parse_etags(value) == expected


def _parse_etags_by_character(text: str) -> list[str] | str:
    """The character-by-character parser parse_etags replaced, kept as its specification."""

    def is_etagc(char: str) -> bool:
        code = ord(char)
        return code == 0x21 or 0x23 <= code <= 0x7E or 0x80 <= code <= 0xFF

    if text.strip() == "*":
        return "*"
    tags: list[str] = []
    i, end = 0, len(text)
    while i < end:
        while i < end and text[i] in " \t,":
            i += 1
        if i == end:
            break
        start = i
        if text.startswith("W/", i):
            i += 2
        close = text.find('"', i + 1) if i < end and text[i] == '"' else -1
        next_comma = text.find(",", i)
        if close != -1 and all(is_etagc(c) for c in text[i + 1 : close]):
            after = close + 1
            while after < end and text[after] in " \t":
                after += 1
            if after == end or text[after] == ",":
                tags.append(text[start : close + 1])
                i = after
                continue
        i = end if next_comma == -1 else next_comma
    return tags


# Pieces If-None-Match values are made of, valid and not, so that random joins hit the edges.
etag_pieces = st.sampled_from(
    ['"a"', 'W/"b"', "w/", "W/", '"', ",", " ", "\t", "\n", "*", "x", "é", "\x7f", '"c d"', "ÿ"]
)


@given(st.lists(etag_pieces, max_size=10).map("".join))
def test_parse_etags_agrees_with_the_character_by_character_parser(value):
    assert parse_etags(value) == _parse_etags_by_character(value)


@given(st.text(max_size=20))
def test_parse_etags_agrees_on_any_text(value):
    assert parse_etags(value) == _parse_etags_by_character(value)


def test_etag_matches_uses_weak_comparison():
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches('"a"', 'W/"a"')
    assert etag_matches('"x", W/"a"', 'W/"a"')
    assert not etag_matches('"b"', '"a"')
    assert etag_matches("*", '"anything"')


opaque_tags = st.text(alphabet=st.characters(min_codepoint=0x23, max_codepoint=0x7E), max_size=8)
etags = st.builds(lambda weak, o: ("W/" if weak else "") + f'"{o}"', st.booleans(), opaque_tags)


@given(etags, etags)
def test_weak_comparison_is_symmetric(a, b):
    assert etag_matches(a, b) == etag_matches(b, a)


@given(etags)
def test_a_tag_matches_its_weak_and_strong_forms(tag):
    opaque = tag.removeprefix("W/")
    assert etag_matches(tag, opaque) and etag_matches(tag, "W/" + opaque)


def test_if_none_match_hit_is_not_modified():
    assert not_modified({"If-None-Match": '"a"'}, etag='W/"a"')


def test_if_none_match_wins_over_if_modified_since():
    headers = {"If-None-Match": '"old"', "If-Modified-Since": LM_HEADER}
    assert not not_modified(headers, etag='"new"', last_modified=LAST_MODIFIED)
    headers = {"If-None-Match": '"new"', "If-Modified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"}
    assert not_modified(headers, etag='"new"', last_modified=LAST_MODIFIED)


def test_if_none_match_without_current_etag_is_modified():
    headers = {"If-None-Match": "*", "If-Modified-Since": LM_HEADER}
    assert not not_modified(headers, last_modified=LAST_MODIFIED)


def test_if_none_match_across_several_field_lines():
    headers = [(b"if-none-match", b'"x"'), (b"if-none-match", b'"a"')]
    assert not_modified(headers, etag='"a"')


def test_if_modified_since_at_or_after_last_modified_is_not_modified():
    assert not_modified({"If-Modified-Since": LM_HEADER}, last_modified=LAST_MODIFIED)
    later = "Wed, 01 May 2024 13:00:00 GMT"
    assert not_modified({"If-Modified-Since": later}, last_modified=LAST_MODIFIED)


def test_if_modified_since_before_last_modified_is_modified():
    earlier = "Wed, 01 May 2024 11:59:59 GMT"
    assert not not_modified({"If-Modified-Since": earlier}, last_modified=LAST_MODIFIED)


def test_if_modified_since_compares_at_one_second_resolution():
    sub_second = LAST_MODIFIED + timedelta(milliseconds=700)
    assert not_modified({"If-Modified-Since": LM_HEADER}, last_modified=sub_second)
    assert not_modified({"If-Modified-Since": LM_HEADER}, last_modified=sub_second.timestamp())


def test_if_modified_since_accepts_obsolete_date_formats():
    rfc850 = "Wednesday, 01-May-24 12:00:00 GMT"
    asctime = "Wed May  1 12:00:00 2024"
    for value in (rfc850, asctime):
        assert not_modified({"If-Modified-Since": value}, last_modified=LAST_MODIFIED), value


@pytest.mark.parametrize("value", ["yesterday", "", "Wed, 99 May 2024 12:00:00 GMT"])
def test_invalid_if_modified_since_is_ignored(value):
    assert not not_modified({"If-Modified-Since": value}, last_modified=LAST_MODIFIED)


def test_if_modified_since_only_applies_to_get_and_head():
    headers = {"If-Modified-Since": LM_HEADER}
    assert not_modified(headers, last_modified=LAST_MODIFIED, method="head")
    assert not not_modified(headers, last_modified=LAST_MODIFIED, method="POST")
    assert not not_modified({"If-None-Match": '"a"'}, etag='"a"', method="PUT")


def test_if_modified_since_without_last_modified_is_modified():
    assert not not_modified({"If-Modified-Since": LM_HEADER})


@pytest.mark.parametrize("precondition", ["If-Match", "If-Unmodified-Since"])
def test_earlier_preconditions_leave_the_answer_to_the_handler(precondition):
    headers = {"If-None-Match": '"a"', precondition: '"b"'}
    assert not not_modified(headers, etag='"a"')


def test_no_conditional_headers_is_modified():
    assert not not_modified({}, etag='"a"', last_modified=LAST_MODIFIED)


def test_http_date_formats_datetimes_and_timestamps_as_imf_fixdate():
    assert http_date(LAST_MODIFIED) == LM_HEADER
    assert http_date(LAST_MODIFIED.timestamp() + 0.9) == LM_HEADER
    assert http_date(datetime(2024, 5, 1, 12, 0, 0)) == LM_HEADER
    plus_two = LAST_MODIFIED.astimezone(timezone(timedelta(hours=2)))
    assert http_date(plus_two) == LM_HEADER
