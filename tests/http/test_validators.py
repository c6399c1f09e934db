"""Route validators: a 304 sent before the handler runs, from an ETag, a version or a
last-modified time (HTTPCacheMiddleware with CachePolicy.validator)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redline.http import CachePolicy, HTTPCacheMiddleware, cache_policy, http_date, strong_etag
from redline.http._conditional import validators_from


class Fund:
    """A row with a version and an updated_at, as one indexed query would return them."""

    def __init__(self) -> None:
        self.version = 1
        self.updated_at = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
        self.handler_runs = 0
        self.validator_runs = 0


def make_app(fund: Fund, validator: Any, **policy: Any) -> HTTPCacheMiddleware:
    async def show(request: Request) -> Response:
        fund.handler_runs += 1
        return PlainTextResponse(f"fund {request.path_params['fund_id']} v{fund.version}")

    app = Starlette(routes=[Route("/funds/{fund_id}", show)])
    options = {"max_age": 0, "vary": ("Accept-Language",)} | policy
    return HTTPCacheMiddleware(
        app, policies={"/funds/*": CachePolicy("public", validator=validator, **options)}
    )


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_matching_version_answers_304_without_running_the_handler() -> None:
    fund = Fund()

    async def version(request: Request) -> int:
        fund.validator_runs += 1
        assert request.path_params == {"fund_id": "7"}
        return fund.version

    async with client_for(make_app(fund, version)) as client:
        first = await client.get("/funds/7")
        etag = first.headers["etag"]
        again = await client.get("/funds/7", headers={"If-None-Match": etag})
        fund.version = 2
        changed = await client.get("/funds/7", headers={"If-None-Match": etag})
    assert first.status_code == 200 and first.content == b"fund 7 v1"
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "public, max-age=0"
    assert again.headers["vary"] == "Accept-Language"
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert fund.handler_runs == 2  # the first and the changed request, never the 304
    assert fund.validator_runs == 3


async def test_version_etag_is_stable_across_app_instances_and_differs_per_variant() -> None:
    fund = Fund()
    english = {"Accept-Language": "en"}
    async with client_for(make_app(fund, lambda request: fund.version)) as client:
        one = (await client.get("/funds/1", headers=english)).headers["etag"]
        german = (await client.get("/funds/1", headers={"Accept-Language": "de"})).headers["etag"]
    async with client_for(make_app(fund, lambda request: fund.version)) as client:
        two = (await client.get("/funds/1", headers=english)).headers["etag"]
    assert one == two and one.startswith('"')
    assert german != one


async def test_validator_etag_string_is_used_as_given_and_replaces_the_content_hash() -> None:
    fund = Fund()
    async with client_for(make_app(fund, lambda request: '"row-7-v1"')) as client:
        first = await client.get("/funds/7")
        again = await client.get("/funds/7", headers={"If-None-Match": 'W/"row-7-v1"'})
    assert first.headers["etag"] == '"row-7-v1"'
    assert first.headers["etag"] != strong_etag(first.content)
    assert again.status_code == 304 and fund.handler_runs == 1


async def test_last_modified_answers_if_modified_since_at_second_precision() -> None:
    fund = Fund()
    async with client_for(make_app(fund, lambda request: fund.updated_at)) as client:
        first = await client.get("/funds/7")
        since = first.headers["last-modified"]
        same = await client.get("/funds/7", headers={"If-Modified-Since": since})
        fund.updated_at += timedelta(seconds=1)
        newer = await client.get("/funds/7", headers={"If-Modified-Since": since})
    assert since == "Fri, 02 Jan 2026 03:04:05 GMT"
    assert same.status_code == 304 and same.headers["last-modified"] == since
    assert newer.status_code == 200
    assert newer.headers["last-modified"] == http_date(fund.updated_at)
    assert fund.handler_runs == 2


async def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    fund = Fund()
    both = lambda request: (fund.version, fund.updated_at)  # noqa: E731
    async with client_for(make_app(fund, both)) as client:
        first = await client.get("/funds/7")
        conditional = {
            "If-None-Match": '"something-else"',
            "If-Modified-Since": first.headers["last-modified"],
        }
        response = await client.get("/funds/7", headers=conditional)
    assert response.status_code == 200 and fund.handler_runs == 2


async def test_failing_validator_degrades_to_running_the_handler(caplog: Any) -> None:
    fund = Fund()

    async def broken(request: Request) -> int:
        raise ConnectionError("database is down")

    async with client_for(make_app(fund, broken)) as client:
        response = await client.get("/funds/7", headers={"If-None-Match": "*"})
    # The handler ran and the content-hash ETag took over, which "*" matches.
    assert response.status_code == 304
    assert fund.handler_runs == 1
    assert "validator of route /funds/{fund_id} failed" in caplog.text


async def test_validator_returning_nonsense_degrades_and_says_what_it_returned(caplog: Any) -> None:
    fund = Fund()
    async with client_for(make_app(fund, lambda request: object())) as client:
        response = await client.get("/funds/7")
    assert response.status_code == 200 and fund.handler_runs == 1
    assert "give an ETag string, a version" in caplog.text


async def test_post_never_consults_the_validator() -> None:
    fund = Fund()

    def version(request: Request) -> int:
        fund.validator_runs += 1
        return 1

    async def show(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/x", show, methods=["POST"])])
    wrapped = HTTPCacheMiddleware(app, default=CachePolicy("public", validator=version))
    async with client_for(wrapped) as client:
        response = await client.post("/x", headers={"If-None-Match": "*"})
    assert response.status_code == 200 and fund.validator_runs == 0


async def test_validator_on_a_fastapi_decorated_endpoint() -> None:
    app = FastAPI()
    runs: list[int] = []

    @app.get("/items/{item_id}")
    @cache_policy(CachePolicy("public", max_age=10, validator=lambda request: 42))
    async def item(item_id: int) -> dict[str, int]:
        runs.append(item_id)
        return {"id": item_id}

    async with client_for(HTTPCacheMiddleware(app)) as client:
        first = await client.get("/items/3")
        again = await client.get("/items/3", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and runs == [3]


@pytest.mark.parametrize(
    ("result", "etag", "modified"),
    [
        (None, None, None),
        ('"abc"', '"abc"', None),
        ('W/"abc"', 'W/"abc"', None),
        (7, strong_etag(b"int:7"), None),
        ("v7", strong_etag(b"s:v7"), None),
        (b"v7", strong_etag(b"b:v7"), None),
        (Decimal("1.5"), strong_etag(b"Decimal:1.5"), None),
        (datetime(2026, 1, 1, tzinfo=UTC), None, datetime(2026, 1, 1, tzinfo=UTC)),
        ((7, None), strong_etag(b"int:7"), None),
    ],
)
def test_validators_from_each_result_form(result: Any, etag: Any, modified: Any) -> None:
    assert validators_from(result) == (etag, modified)


def test_validators_from_distinguishes_types_and_refuses_bad_results() -> None:
    assert validators_from("7")[0] != validators_from(7)[0]
    assert validators_from(uuid.UUID(int=1))[0] == strong_etag(
        b"UUID:00000000-0000-0000-0000-000000000001"
    )
    with pytest.raises(ValueError, match="not one valid entity-tag"):
        validators_from('"a", "b"')
    with pytest.raises(TypeError, match="second item must be a datetime"):
        validators_from((1, 2))
    with pytest.raises(TypeError, match="give an ETag string"):
        validators_from(1.5)
