"""CachePolicy, parse_cache_control and shared_cache_may_store (redline/http/_policy.py)."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redline.http import CachePolicy, CachePolicyError, parse_cache_control, shared_cache_may_store
from redline.http._headers import header_values

ANON: list[tuple[bytes, bytes]] = []


def test_header_lists_directives_in_canonical_order():
    policy = CachePolicy(
        visibility="public",
        immutable=True,
        stale_if_error=60,
        stale_while_revalidate=30,
        s_maxage=600,
        max_age=60,
        no_cache=False,
    )
    assert policy.header() == (
        "public, max-age=60, s-maxage=600, stale-while-revalidate=30, stale-if-error=60, immutable"
    )


def test_default_policy_is_private():
    assert CachePolicy().header() == "private"


def test_no_store_header_is_bare():
    assert CachePolicy(visibility="no-store").header() == "no-store"


def test_vary_header_joins_names_and_is_none_when_empty():
    policy = CachePolicy(vary=("Accept", "Accept-Encoding"))
    assert policy.vary_header() == "Accept, Accept-Encoding"
    assert CachePolicy().vary_header() is None


def test_vary_accepts_a_list_and_stores_a_tuple():
    assert CachePolicy(vary=["Accept"]).vary == ("Accept",)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_age": -1}, "max_age"),
        ({"visibility": "public", "s_maxage": -5}, "s_maxage"),
        ({"stale_while_revalidate": -1}, "stale_while_revalidate"),
        ({"stale_if_error": 1.5}, "stale_if_error"),
        ({"max_age": True}, "max_age"),
        ({"visibility": "shared"}, "visibility"),
        ({"vary": "Accept"}, "vary"),
        ({"vary": ("Bad Header",)}, "vary"),
        ({"vary": ("*", "Accept")}, "vary"),
        ({"visibility": "no-store", "max_age": 10}, "max_age"),
        ({"visibility": "no-store", "no_cache": True}, "no_cache"),
        ({"visibility": "private", "s_maxage": 10}, "s_maxage"),
        ({"must_revalidate": True, "stale_if_error": 10}, "must_revalidate"),
        ({"immutable": True}, "immutable"),
        ({"immutable": True, "max_age": 10, "no_cache": True}, "immutable"),
    ],
)
def test_invalid_policy_raises_naming_the_field(kwargs, field):
    with pytest.raises(CachePolicyError, match=field):
        CachePolicy(**kwargs)


def test_policy_error_is_a_value_error_and_redline_error():
    from redline._exceptions import RedlineError

    assert issubclass(CachePolicyError, ValueError)
    assert issubclass(CachePolicyError, RedlineError)


def test_parse_is_case_and_whitespace_tolerant():
    assert parse_cache_control("  Public ,MAX-AGE = 60,, no-cache ") == {
        "public": None,
        "max-age": 60,
        "no-cache": None,
    }


def test_parse_unquotes_values_and_keeps_commas_inside_quotes():
    assert parse_cache_control('private="Set-Cookie, X-User", max-age="30"') == {
        "private": "Set-Cookie, X-User",
        "max-age": 30,
    }


def test_parse_first_duplicate_wins():
    assert parse_cache_control("max-age=10, max-age=99")["max-age"] == 10


def test_parse_joins_several_field_lines():
    assert parse_cache_control(["public", "max-age=5"]) == {"public": None, "max-age": 5}


def test_parse_caps_huge_delta_seconds_and_keeps_invalid_numbers_as_text():
    parsed = parse_cache_control("max-age=99999999999999, s-maxage=-1")
    assert parsed == {"max-age": 2**31, "s-maxage": "-1"}


def test_parse_empty_or_none_is_empty():
    assert parse_cache_control(None) == {}
    assert parse_cache_control("") == {}


ages = st.none() | st.integers(min_value=0, max_value=2**31)


@st.composite
def policies(draw):
    visibility = draw(st.sampled_from(["public", "private", "no-store"]))
    if visibility == "no-store":
        return CachePolicy(visibility="no-store")
    must_revalidate = draw(st.booleans())
    stale = st.none() if must_revalidate else ages
    max_age = draw(ages)
    no_cache = draw(st.booleans())
    return CachePolicy(
        visibility=visibility,
        max_age=max_age,
        s_maxage=draw(ages) if visibility == "public" else None,
        stale_while_revalidate=draw(stale),
        stale_if_error=draw(stale),
        must_revalidate=must_revalidate,
        no_cache=no_cache,
        immutable=max_age is not None and not no_cache and draw(st.booleans()),
    )


@given(policies())
def test_header_round_trips_through_parse(policy):
    parsed = parse_cache_control(policy.header())
    assert policy.visibility in parsed
    assert parsed.get("max-age") == policy.max_age
    assert parsed.get("s-maxage") == policy.s_maxage
    assert parsed.get("stale-while-revalidate") == policy.stale_while_revalidate
    assert parsed.get("stale-if-error") == policy.stale_if_error
    assert ("must-revalidate" in parsed) == policy.must_revalidate
    assert ("no-cache" in parsed) == policy.no_cache
    assert ("immutable" in parsed) == policy.immutable


def test_header_values_reads_mappings_and_asgi_pairs():
    assert header_values({"Vary": "Accept"}, "vary") == ["Accept"]
    pairs = [(b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"x", b"y")]
    assert header_values(pairs, "set-cookie") == ["a=1", "b=2"]


def test_public_200_may_be_stored():
    assert shared_cache_may_store(ANON, 200, [(b"cache-control", b"public, max-age=60")])


def test_plain_200_without_directives_may_be_stored_heuristically():
    assert shared_cache_may_store(ANON, 200, [])


@pytest.mark.parametrize("cc", ["private", 'private="X-User"', "no-store", "PRIVATE, max-age=9"])
def test_private_or_no_store_response_is_never_stored(cc):
    assert not shared_cache_may_store(ANON, 200, [("Cache-Control", cc)])


def test_request_no_store_forbids_storing():
    assert not shared_cache_may_store({"Cache-Control": "no-store"}, 200, {})


def test_set_cookie_response_is_never_stored_even_if_public():
    headers = [(b"cache-control", b"public, s-maxage=60"), (b"set-cookie", b"sid=abc")]
    assert not shared_cache_may_store(ANON, 200, headers)


def test_vary_star_is_never_stored():
    assert not shared_cache_may_store(ANON, 200, {"Vary": "Accept, *"})


def test_authorized_request_is_not_stored_by_default():
    request = {"Authorization": "Bearer user-a"}
    assert not shared_cache_may_store(request, 200, {"Cache-Control": "max-age=60"})


@pytest.mark.parametrize("cc", ["public", "s-maxage=60", "must-revalidate, max-age=0"])
def test_authorized_request_may_be_stored_when_response_allows_it(cc):
    assert shared_cache_may_store({"Authorization": "Bearer x"}, 200, {"Cache-Control": cc})


@pytest.mark.parametrize("status", [500, 302, 201, 403])
def test_other_status_needs_explicit_freshness(status):
    assert not shared_cache_may_store(ANON, status, [])
    assert shared_cache_may_store(ANON, status, {"Cache-Control": "max-age=5"})
    assert shared_cache_may_store(ANON, status, {"Cache-Control": "public"})
    assert shared_cache_may_store(ANON, status, {"Expires": "Thu, 01 Jan 2099 00:00:00 GMT"})


@pytest.mark.parametrize("status", [100, 206, 304])
def test_interim_partial_and_not_modified_are_never_stored(status):
    assert not shared_cache_may_store(ANON, status, {"Cache-Control": "public, max-age=60"})


@pytest.mark.parametrize("status", [204, 301, 404, 410])
def test_status_cacheable_by_default_is_stored(status):
    assert shared_cache_may_store(ANON, status, [])


# -- tags, validator, vary_user ---------------------------------------------------------------


def test_tags_for_fills_templates_from_path_params_and_deduplicates():
    policy = CachePolicy("public", max_age=5, tags=("fund:{fund_id}", "funds", "funds"))
    assert policy.tags_for({"fund_id": 7}) == ("fund:7", "funds")


def test_tags_for_percent_encodes_what_a_tag_cannot_hold():
    policy = CachePolicy(tags=("name:{name}",))
    assert policy.tags_for({"name": "a b,c%é"}) == ("name:a%20b%2Cc%25%C3%A9",)


def test_tags_for_names_route_and_template_when_a_parameter_is_missing():
    policy = CachePolicy(tags=("fund:{fund_id}",))
    with pytest.raises(
        CachePolicyError, match=r"'fund:\{fund_id\}' on route '/funds/\{id\}'.*'id'"
    ):
        policy.tags_for({"id": 1}, "/funds/{id}")


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ("fund:{fund_id}", "give a tuple"),
        (("fund {id}",), "' ' is not allowed"),
        (("a,{id}",), "',' is not allowed"),
        (("{id!r}",), "plainly"),
        (("{id:>4}",), "plainly"),
        (("{0}",), "plainly"),
        (("{",), "Single '{'"),
        (("",), "non-empty"),
        ((7,), "non-empty str"),
    ],
)
def test_invalid_tag_templates_are_refused(tags, why):
    with pytest.raises(CachePolicyError, match=why):
        CachePolicy(tags=tags)


@pytest.mark.parametrize("field", ["validator", "vary_user"])
def test_validator_and_vary_user_must_be_callable(field):
    with pytest.raises(CachePolicyError, match=f"CachePolicy.{field}=.*callable"):
        CachePolicy(**{field: "fund.version"})


def test_derived_headers_follow_the_fields_through_replace():
    public = CachePolicy("public", max_age=60, s_maxage=300, vary=("Accept",))
    changed = dataclasses.replace(public, max_age=5, vary=("Accept-Language",))
    assert public._cache_control == (
        b"public, max-age=60, s-maxage=300",
        b"private, max-age=60",
    )
    assert (
        changed._cache_control[0] == changed.header().encode() == b"public, max-age=5, s-maxage=300"
    )
    assert changed._bare[0] == (
        (b"cache-control", changed._cache_control[0]),
        (b"vary", b"Accept-Language"),
    )
    assert changed._bare_fields[1][b"cache-control"] == [b"private, max-age=5"]


def test_derived_headers_are_not_part_of_equality_hash_or_repr():
    one, two = CachePolicy("public", max_age=60), CachePolicy("public", max_age=60)
    assert one == two and hash(one) == hash(two)
    assert "_cache_control" not in repr(one) and "_bare" not in repr(one)


def test_parse_cache_control_hands_each_caller_its_own_dict():
    first = parse_cache_control("public, max-age=60")
    first["max-age"] = 0
    assert parse_cache_control("public, max-age=60") == {"public": None, "max-age": 60}
