"""The dashboard: live aggregates and the materialized view agree; the refresher takes turns."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from redline.demo import DashboardRefresher, DemoConfigError, refresh_dashboard
from redline.demo._refresher import LOCK_KEY


def _without_source(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "source"}


def _write_some_calls(client, auth) -> None:
    for fund_id, amount, due in ((1, "1000.00", "2030-03-01"), (2, "2500.50", "2023-02-10")):
        created = client.post(
            "/capital-calls",
            json={
                "fund_id": fund_id,
                "investor_id": 3,
                "amount": amount,
                "due_date": due,
                "status": "issued",
            },
            headers=auth,
        ).json()
        client.post(
            f"/capital-calls/{created['id']}/payments",
            json={"amount": "100.00", "reference": "part"},
            headers=auth,
        )


@pytest.mark.parametrize("fund_id", [None, 1, 2])
def test_live_and_matview_agree_after_a_refresh(login, demo_url, make_client, fund_id):
    live = make_client(demo_url, dashboard_source="live", cache="l1")
    matview = make_client(demo_url, dashboard_source="matview", refresh_interval=0)
    path = "/dashboard" if fund_id is None else f"/dashboard?fund_id={fund_id}"
    first = live.get(path).json()
    assert first["source"] == "live" and first["totals"] and first["series"]
    assert _without_source(matview.get(path).json()) == _without_source(first)

    _write_some_calls(live, login(live, 1))
    changed = live.get(path).json()
    assert changed != first
    # The view is as fresh as its last refresh: the writes are not in it yet.
    assert _without_source(matview.get(path).json()) == _without_source(first)

    assert asyncio.run(refresh_dashboard(demo_url)) is True
    body = matview.get(path).json()
    assert body["source"] == "matview"
    assert _without_source(body) == _without_source(changed)


def test_the_apps_refresher_refreshes_the_view_and_its_cached_dashboards(
    login, demo_url, make_client, cache_mode
):
    writer = make_client(demo_url)
    app = make_client(demo_url, dashboard_source="matview", cache=cache_mode, refresh_interval=0.2)
    before = app.get("/dashboard").json()
    _write_some_calls(writer, login(writer, 1))
    expected = _without_source(writer.get("/dashboard").json())
    assert _without_source(before) != expected
    refresher = app.app.state.refresher
    start = refresher.refreshes
    for _ in range(200):
        if (
            refresher.refreshes > start
            and _without_source(app.get("/dashboard").json()) == expected
        ):
            break
        time.sleep(0.05)
    assert refresher.refreshes > start
    assert _without_source(app.get("/dashboard").json()) == expected


def test_a_refresh_is_skipped_while_another_process_holds_the_lock(demo_url):
    with psycopg.connect(demo_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        assert asyncio.run(refresh_dashboard(demo_url)) is False
        other.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    assert asyncio.run(refresh_dashboard(demo_url)) is True


def test_a_failing_refresh_is_counted_and_retried_not_raised(demo_url):
    from sqlalchemy.ext.asyncio import create_async_engine

    async def scenario() -> tuple[bool, int, int]:
        engine = create_async_engine(
            demo_url.replace("postgresql://", "postgresql+asyncpg://") + "_missing"
        )
        refresher = DashboardRefresher(engine, 60)
        try:
            refreshed = await refresher.tick()
        finally:
            await engine.dispose()
        return refreshed, refresher.failures, refresher.refreshes

    assert asyncio.run(scenario()) == (False, 1, 0)


@pytest.mark.parametrize("interval", [0, -1, "5", True])
def test_the_refresher_refuses_a_bad_interval(interval):
    with pytest.raises(DemoConfigError, match="interval"):
        DashboardRefresher(object(), interval)
