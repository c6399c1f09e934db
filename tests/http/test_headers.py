"""HeaderFields and header_values (redline/http/_headers.py): one pass, then lookups by name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers as StarletteHeaders

from redline.http._headers import HeaderFields, header_fields, header_values


def test_fields_are_lowercased_and_keep_every_value_in_order() -> None:
    fields = HeaderFields([(b"Cookie", b"a=1"), (b"host", b"x"), (b"COOKIE", b"b=2")])
    assert fields[b"cookie"] == [b"a=1", b"b=2"]
    assert fields.values_of(b"cookie") == ["a=1", "b=2"]
    assert fields.joined(b"cookie") == "a=1, b=2"
    assert fields.joined(b"host") == "x"


def test_absent_fields_read_as_empty() -> None:
    fields = HeaderFields([(b"host", b"x")])
    assert b"etag" not in fields
    assert fields.values_of(b"etag") == []
    assert fields.joined(b"etag") == ""


def test_fields_read_str_pairs_mappings_and_decode_latin1() -> None:
    assert HeaderFields([("Vary", "Accept")]).values_of(b"vary") == ["Accept"]
    assert HeaderFields({"Content-Type": "text/plain"}).joined(b"content-type") == "text/plain"
    starlette = StarletteHeaders(raw=[(b"x-name", "café".encode("latin-1"))])
    assert HeaderFields(starlette).values_of(b"x-name") == ["café"]


def test_header_fields_reuses_fields_and_reads_anything_else() -> None:
    fields = HeaderFields([(b"host", b"x")])
    assert header_fields(fields) is fields
    assert header_fields([(b"host", b"y")]).joined(b"host") == "y"


names = st.sampled_from(["Host", "host", "Cookie", "cookie", "Accept", "ETAG", "etag", "Vary"])
values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=12)
header_lists = st.lists(
    st.tuples(names, values).map(lambda p: (p[0].encode(), p[1].encode("latin-1"))), max_size=8
)


@given(header_lists, names)
def test_header_values_answers_the_same_from_a_list_and_from_fields(
    headers: list[tuple[bytes, bytes]], name: str
) -> None:
    from_list = header_values(headers, name)
    assert from_list == header_values(HeaderFields(headers), name)
    assert from_list == [
        v.decode("latin-1") for k, v in headers if k.lower() == name.lower().encode()
    ]
