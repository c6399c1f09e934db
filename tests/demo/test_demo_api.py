"""The demo API against real PostgreSQL and Redis, in every cache mode.

The invalidation tests all follow one pattern: read (which fills the cache), write, read
again, and expect the new value. With ``cache="none"`` they check the API itself; with
``"l1"`` and ``"l1+l2"`` they prove each write path invalidates what its reads cached.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from redline._servers import PostgresServer
from redline.demo import _mix
from redline.demo._paging import Where

FAR_DUE = "2030-01-15"


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def sql(pg_server: PostgresServer, url: str, statement: str) -> str:
    return pg_server.psql(statement, database=_database(url))


def investor_user(pg_server: PostgresServer, url: str, nth: int = 0) -> tuple[int, int]:
    """(user id, investor id) of the nth seed user who belongs to an investor."""
    row = sql(
        pg_server,
        url,
        f"SELECT id, investor_id FROM users WHERE investor_id IS NOT NULL ORDER BY id "
        f"OFFSET {nth} LIMIT 1",
    )
    user_id, investor_id = row.split("|")
    return int(user_id), int(investor_id)


def first_call(pg_server: PostgresServer, url: str, status: str) -> tuple[int, int, int]:
    """(id, fund id, version) of the seed call with the lowest id in ``status``."""
    row = sql(
        pg_server,
        url,
        f"SELECT id, fund_id, version FROM capital_calls WHERE status = '{status}' "
        "ORDER BY id LIMIT 1",
    )
    call_id, fund_id, version = map(int, row.split("|"))
    return call_id, fund_id, version


def set_status(client, auth: dict, call_id: int, status: str, version: int):
    """PATCH the call's status, claiming it is at ``version``."""
    return client.patch(
        f"/capital-calls/{call_id}/status",
        json={"status": status, "version": version},
        headers=auth,
    )


def total(body: dict, status: str, field: str = "calls") -> Decimal:
    for row in body["totals" if "totals" in body else "calls_by_status"]:
        if row["status"] == status:
            return Decimal(str(row[field]))
    return Decimal(0)


def holding(me: dict, fund_id: int, field: str) -> Decimal:
    return next(Decimal(h[field]) for h in me["holdings"] if h["fund_id"] == fund_id)


# -- every write path invalidates what it must ---------------------------------------------


def test_creating_a_call_shows_in_every_read_that_includes_it(
    login, pg_server, demo_url, make_client, cache_mode
):
    # Searches state a lag instead of being invalidated: here 1 s.
    client = make_client(demo_url, cache=cache_mode, search_lag=1)
    user_id, investor_id = investor_user(pg_server, demo_url)
    auth = login(client, user_id)
    fund_id = 1
    investor_name = sql(pg_server, demo_url, f"SELECT name FROM investors WHERE id = {investor_id}")
    reads = {
        "fund_list": f"/capital-calls?fund_id={fund_id}&due_from={FAR_DUE}",
        "all_list": f"/capital-calls?due_from={FAR_DUE}",
        "investor_list": f"/capital-calls?investor_id={investor_id}&due_from={FAR_DUE}",
        "search": f"/capital-calls/search?q={investor_name[:-1]}&limit=200",
        "fund": f"/funds/{fund_id}",
        "dashboard": "/dashboard",
        "fund_dashboard": f"/dashboard?fund_id={fund_id}",
    }
    before = {name: client.get(path).json() for name, path in reads.items()}
    me_before = client.get("/me", headers=auth).json()
    assert before["fund_list"]["items"] == [] and before["all_list"]["items"] == []

    created = client.post(
        "/capital-calls",
        json={
            "fund_id": fund_id,
            "investor_id": investor_id,
            "amount": "12345.67",
            "due_date": FAR_DUE,
            "status": "issued",
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    call = created.json()
    assert created.headers["location"] == f"/capital-calls/{call['id']}"
    assert (call["status"], call["version"], call["amount"]) == ("issued", 1, "12345.67")

    after = {name: client.get(path).json() for name, path in reads.items()}
    for name in ("fund_list", "all_list", "investor_list"):
        assert [item["id"] for item in after[name]["items"]] == [call["id"]], name
    # Within the search's stated lag (1 s), never later.
    written = time.monotonic()
    while call["id"] not in [item["id"] for item in after["search"]["items"]]:
        assert time.monotonic() - written < 1.5, "the search lagged beyond its stated 1 s"
        time.sleep(0.1)
        after["search"] = client.get(reads["search"]).json()
    for name in ("fund", "dashboard", "fund_dashboard"):
        assert total(after[name], "issued") == total(before[name], "issued") + 1, name
        assert total(after[name], "issued", "amount") == total(
            before[name], "issued", "amount"
        ) + Decimal("12345.67")
    assert client.get(f"/capital-calls/{call['id']}").json() == call
    me_after = client.get("/me", headers=auth).json()
    assert holding(me_after, fund_id, "called") == holding(me_before, fund_id, "called") + Decimal(
        "12345.67"
    )


def test_a_status_update_shows_in_the_detail_the_lists_and_the_totals(
    login, pg_server, demo_url, make_client, cache_mode
):
    client = make_client(demo_url, cache=cache_mode)
    auth = login(client, 1)
    call_id, fund_id, version = first_call(pg_server, demo_url, "issued")
    detail = client.get(f"/capital-calls/{call_id}").json()
    listed = client.get(f"/capital-calls?fund_id={fund_id}&status=overdue&limit=200").json()
    fund = client.get(f"/funds/{fund_id}").json()
    dashboard = client.get("/dashboard").json()
    assert detail["status"] == "issued"
    assert call_id not in [item["id"] for item in listed["items"]]

    response = set_status(client, auth, call_id, "overdue", version)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["version"]) == ("overdue", version + 1)

    detail = client.get(f"/capital-calls/{call_id}").json()
    assert (detail["status"], detail["version"]) == ("overdue", version + 1)
    listed = client.get(f"/capital-calls?fund_id={fund_id}&status=overdue&limit=200").json()
    assert call_id in [item["id"] for item in listed["items"]]
    new_fund = client.get(f"/funds/{fund_id}").json()
    assert total(new_fund, "overdue") == total(fund, "overdue") + 1
    assert total(new_fund, "issued") == total(fund, "issued") - 1
    assert total(client.get("/dashboard").json(), "overdue") == total(dashboard, "overdue") + 1


def test_a_payment_shows_in_the_call_its_payments_and_the_investors_holdings(
    login, pg_server, demo_url, make_client, cache_mode
):
    client = make_client(demo_url, cache=cache_mode)
    user_id, investor_id = investor_user(pg_server, demo_url)
    auth = login(client, user_id)
    created = client.post(
        "/capital-calls",
        json={
            "fund_id": 1,
            "investor_id": investor_id,
            "amount": "1000.00",
            "due_date": FAR_DUE,
            "status": "issued",
        },
        headers=auth,
    ).json()
    call_id = created["id"]
    assert client.get(f"/capital-calls/{call_id}/payments").json() == {"items": []}
    me = client.get("/me", headers=auth).json()

    first = client.post(
        f"/capital-calls/{call_id}/payments",
        json={"amount": "400.00", "reference": "WIRE-1"},
        headers=auth,
    )
    assert first.status_code == 201, first.text
    detail = client.get(f"/capital-calls/{call_id}").json()
    assert (detail["paid"], detail["outstanding"], detail["status"]) == (
        "400.00",
        "600.00",
        "issued",
    )
    payments = client.get(f"/capital-calls/{call_id}/payments").json()["items"]
    assert [(p["amount"], p["reference"]) for p in payments] == [("400.00", "WIRE-1")]
    me_after = client.get("/me", headers=auth).json()
    assert holding(me_after, 1, "paid") == holding(me, 1, "paid") + 400

    client.post(
        f"/capital-calls/{call_id}/payments",
        json={"amount": "600.00", "reference": "WIRE-2"},
        headers=auth,
    )
    detail = client.get(f"/capital-calls/{call_id}").json()
    assert (detail["status"], detail["outstanding"], detail["version"]) == ("paid", "0.00", 2)
    assert len(client.get(f"/capital-calls/{call_id}/payments").json()["items"]) == 2


def test_workflow_writes_show_in_lists_history_and_the_retry_queue(
    login, demo_url, make_client, cache_mode
):
    client = make_client(demo_url, cache=cache_mode)
    auth = login(client, 1)
    listed = client.get("/workflows?trigger=nightly.check").json()
    assert listed["items"] == []
    created = client.post(
        "/workflows",
        json={
            "name": "Always fails",
            "trigger": "nightly.check",
            "failure_rate": 100,
            "max_attempts": 2,
            "steps": 2,
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    workflow = created.json()
    assert workflow["owner_id"] == 1
    assert [w["id"] for w in client.get("/workflows?trigger=nightly.check").json()["items"]] == [
        workflow["id"]
    ]
    history = f"/workflows/{workflow['id']}/executions"
    queue = f"/retries?workflow_id={workflow['id']}"
    assert client.get(history).json()["items"] == []
    assert client.get(queue).json()["items"] == []

    run = client.post(f"/workflows/{workflow['id']}/run", headers=auth)
    assert run.status_code == 201, run.text
    execution = run.json()
    assert (execution["status"], execution["attempt"]) == ("failed", 1)
    assert execution["duration_ms"] is not None and execution["error"]
    assert [e["id"] for e in client.get(history).json()["items"]] == [execution["id"]]
    [retry] = client.get(queue).json()["items"]
    assert (retry["execution_id"], retry["attempts"], retry["status"]) == (
        execution["id"],
        1,
        "pending",
    )

    again = client.post(f"/retries/{retry['id']}/retry", headers=auth)
    assert again.status_code == 201, again.text
    assert (again.json()["status"], again.json()["attempt"]) == ("failed", 2)
    assert client.get(queue).json()["items"] == []
    [dead] = client.get(f"{queue}&status=dead").json()["items"]
    assert (dead["attempts"], dead["execution_id"]) == (2, again.json()["id"])
    assert len(client.get(history).json()["items"]) == 2
    assert client.get(f"{history}?status=failed").json()["items"][0]["id"] == again.json()["id"]
    refused = client.post(f"/retries/{retry['id']}/retry", headers=auth)
    assert (refused.status_code, refused.json()["detail"]["error"]) == (409, "retry_dead")


def test_a_retry_that_succeeds_leaves_the_queue(
    login, pg_server, demo_url, make_client, cache_mode
):
    client = make_client(demo_url, cache=cache_mode)
    auth = login(client, 1)
    workflow = client.post(
        "/workflows", json={"name": "Flaky", "failure_rate": 100}, headers=auth
    ).json()
    client.post(f"/workflows/{workflow['id']}/run", headers=auth)
    [retry] = client.get(f"/retries?workflow_id={workflow['id']}").json()["items"]
    sql(pg_server, demo_url, f"UPDATE workflows SET failure_rate = 0 WHERE id = {workflow['id']}")
    # The direct UPDATE bypassed the API; the retry reads the workflow from the database.
    result = client.post(f"/retries/{retry['id']}/retry", headers=auth).json()
    assert (result["status"], result["attempt"]) == ("succeeded", 2)
    assert client.get(f"/retries?workflow_id={workflow['id']}").json()["items"] == []
    assert client.get(f"/retries?workflow_id={workflow['id']}&status=dead").json()["items"] == []


def test_a_profile_change_shows_in_me(login, demo_url, make_client, cache_mode):
    client = make_client(demo_url, cache=cache_mode)
    auth = login(client, 2)
    assert client.get("/me", headers=auth).json()["name"] != "Renamed"
    changed = client.patch("/me", json={"name": "  Renamed  "}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Renamed"
    assert changed.headers["cache-control"] == "private, no-store"
    assert client.get("/me", headers=auth).json()["name"] == "Renamed"


def test_logout_ends_the_session_at_once(login, demo_url, make_client, cache_mode):
    client = make_client(demo_url, cache=cache_mode)
    auth = login(client, 1)
    assert client.get("/me", headers=auth).status_code == 200
    assert client.post("/auth/logout", headers=auth).status_code == 204
    response = client.get("/me", headers=auth)
    assert response.status_code == 401
    assert client.post("/auth/logout", headers=auth).status_code == 401


def test_a_write_in_one_process_is_seen_by_another_sharing_redis(
    login, pg_server, demo_url, make_client
):
    writer = make_client(demo_url, cache="l1+l2")
    reader = make_client(demo_url, cache="l1+l2")
    auth = login(writer, 1)
    call_id, _, version = first_call(pg_server, demo_url, "draft")
    assert reader.get(f"/capital-calls/{call_id}").json()["status"] == "draft"
    assert writer.get(f"/capital-calls/{call_id}").json()["status"] == "draft"
    response = set_status(writer, auth, call_id, "issued", version)
    assert response.status_code == 200
    assert reader.get(f"/capital-calls/{call_id}").json()["status"] == "issued"
    # And a logout in one process ends the session in the other.
    reader_auth = dict(auth)
    assert reader.get("/me", headers=reader_auth).status_code == 200
    writer.post("/auth/logout", headers=auth)
    assert reader.get("/me", headers=reader_auth).status_code == 401


# -- private data ---------------------------------------------------------------------------


def test_private_data_never_crosses_users(login, pg_server, demo_url, make_client, cache_mode):
    # Two processes when there is a shared tier: A's entries are in Redis when B asks.
    first = make_client(demo_url, cache=cache_mode)
    second = make_client(demo_url, cache=cache_mode) if cache_mode.startswith("l1+l2") else first
    user_a, investor_a = investor_user(pg_server, demo_url, 0)
    user_b, investor_b = investor_user(pg_server, demo_url, 1)
    assert investor_a != investor_b
    auth_a, auth_b = login(first, user_a), login(second, user_b)

    me_a = first.get("/me", headers=auth_a).json()
    assert (me_a["id"], me_a["investor_id"]) == (user_a, investor_a)
    assert first.get("/me", headers=auth_a).json() == me_a

    me_b = second.get("/me", headers=auth_b).json()
    assert (me_b["id"], me_b["investor_id"]) == (user_b, investor_b)
    assert me_b["email"] != me_a["email"] and me_b["holdings"] != me_a["holdings"]
    assert second.get("/me", headers=auth_b).json() == me_b
    assert first.get("/me", headers=auth_a).json() == me_a

    # No session, a forged token, or a cookie that is not a session: nothing of A's.
    for headers in ({}, {"authorization": "Bearer forged"}, {"cookie": "redline_session=x"}):
        response = second.get("/me", headers=headers)
        assert response.status_code == 401, headers
        assert me_a["email"] not in response.text
    assert "private" in first.get("/me", headers=auth_a).headers["cache-control"]


def test_a_cookie_session_works_and_the_cookie_is_locked_down(demo_url, make_client):
    client = make_client(demo_url, secure_cookies=False)
    response = client.post(
        "/auth/login", json={"email": "USER1@example.com ", "password": "redline-demo"}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert client.get("/me").json()["id"] == 1

    secure = make_client(demo_url, secure_cookies=True)
    response = secure.post(
        "/auth/login", json={"email": "user1@example.com", "password": "redline-demo"}
    )
    assert "; secure" in response.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("email", "password"),
    [("user1@example.com", "wrong"), ("nobody@example.com", "redline-demo")],
)
def test_bad_credentials_are_401_alike(demo_url, make_client, email, password):
    client = make_client(demo_url)
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 401
    assert response.json()["detail"]["error"] == "bad_credentials"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/capital-calls", {"fund_id": 1, "investor_id": 1, "amount": "1",
                                    "due_date": FAR_DUE}),
        ("patch", "/capital-calls/1/status", {"status": "cancelled", "version": 1}),
        ("post", "/capital-calls/1/payments", {"amount": "1", "reference": "x"}),
        ("post", "/workflows", {"name": "x"}),
        ("post", "/workflows/1/run", None),
        ("post", "/retries/1/retry", None),
        ("patch", "/me", {"name": "x"}),
    ],
)  # fmt: skip
def test_writes_need_a_session(pg_server, demo_url, make_client, method, path, body):
    client = make_client(demo_url)
    before = sql(pg_server, demo_url, "SELECT count(*), sum(version) FROM capital_calls")
    response = client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json()["detail"]["error"] == "unauthenticated"
    assert sql(pg_server, demo_url, "SELECT count(*), sum(version) FROM capital_calls") == before


# -- concurrency and validation -------------------------------------------------------------


def test_a_stale_version_is_a_409_and_changes_nothing(login, pg_server, demo_url, make_client):
    client = make_client(demo_url, cache="l1")
    auth = login(client, 1)
    call_id, _, version = first_call(pg_server, demo_url, "issued")
    ok = set_status(client, auth, call_id, "overdue", version)
    assert ok.status_code == 200
    stale = set_status(client, auth, call_id, "cancelled", version)
    assert stale.status_code == 409
    assert stale.json()["detail"]["error"] == "version_conflict"
    assert stale.json()["detail"]["current_version"] == version + 1
    row = sql(
        pg_server, demo_url, f"SELECT status, version FROM capital_calls WHERE id = {call_id}"
    )
    assert row == f"overdue|{version + 1}"


def test_racing_status_updates_with_one_version_let_exactly_one_win(
    login, pg_server, demo_url, make_client
):
    # Two app instances (two workers) and a thread per request: the statement's own WHERE on
    # the version decides, on the row PostgreSQL locks, with no transaction around it.
    clients = [make_client(demo_url), make_client(demo_url)]
    auths = [login(client, 1) for client in clients]
    call_id, _, version = first_call(pg_server, demo_url, "issued")
    targets = ["overdue", "paid", "cancelled", "overdue"] * 2
    with ThreadPoolExecutor(len(targets)) as pool:
        answers = list(
            pool.map(
                lambda i: set_status(clients[i % 2], auths[i % 2], call_id, targets[i], version),
                range(len(targets)),
            )
        )
    codes = sorted(response.status_code for response in answers)
    assert codes == [200] + [409] * (len(targets) - 1)
    won = next(response.json() for response in answers if response.status_code == 200)
    assert won["version"] == version + 1
    for response in answers:
        if response.status_code == 409:
            assert response.json()["detail"]["error"] == "version_conflict"
    row = sql(
        pg_server, demo_url, f"SELECT status, version FROM capital_calls WHERE id = {call_id}"
    )
    assert row == f"{won['status']}|{version + 1}"


def test_a_status_update_of_an_unknown_call_is_a_404(login, make_client, demo_url):
    client = make_client(demo_url)
    response = set_status(client, login(client, 1), 999999, "issued", 1)
    assert response.status_code == 404
    assert response.json()["detail"]["error"] == "not_found"


def test_a_status_that_cannot_follow_is_a_409(login, pg_server, demo_url, make_client):
    client = make_client(demo_url)
    auth = login(client, 1)
    call_id, _, version = first_call(pg_server, demo_url, "paid")
    response = set_status(client, auth, call_id, "issued", version)
    assert response.status_code == 409
    assert response.json()["detail"]["error"] == "invalid_transition"
    assert "final" in response.json()["detail"]["message"]


def test_payments_beyond_the_outstanding_or_on_drafts_are_409(
    login, pg_server, demo_url, make_client
):
    client = make_client(demo_url)
    auth = login(client, 1)
    draft = client.post(
        "/capital-calls",
        json={"fund_id": 1, "investor_id": 1, "amount": "100.00", "due_date": FAR_DUE},
        headers=auth,
    ).json()
    response = client.post(
        f"/capital-calls/{draft['id']}/payments",
        json={"amount": "1.00", "reference": "x"},
        headers=auth,
    )
    assert (response.status_code, response.json()["detail"]["error"]) == (409, "not_payable")
    set_status(client, auth, draft["id"], "issued", 1)
    response = client.post(
        f"/capital-calls/{draft['id']}/payments",
        json={"amount": "100.01", "reference": "x"},
        headers=auth,
    )
    assert (response.status_code, response.json()["detail"]["error"]) == (409, "overpayment")
    assert response.json()["detail"]["outstanding"] == "100.00"
    count = sql(
        pg_server, demo_url, f"SELECT count(*) FROM payments WHERE capital_call_id = {draft['id']}"
    )
    assert count == "0"


def _locations(response) -> set[tuple]:
    assert response.status_code == 422, response.text
    return {tuple(error["loc"]) for error in response.json()["detail"]}


def test_validation_errors_are_422_naming_the_fields(login, demo_url, make_client):
    client = make_client(demo_url)
    auth = login(client, 1)
    cases = [
        (
            client.post(
                "/capital-calls",
                json={"fund_id": 0, "investor_id": 1, "amount": "-5", "due_date": "soon",
                      "colour": "red"},
                headers=auth,
            ),
            {("body", "fund_id"), ("body", "amount"), ("body", "due_date"), ("body", "colour")},
        ),
        (
            client.post(
                "/capital-calls",
                json={"fund_id": 1, "investor_id": 1, "amount": "1.001", "due_date": FAR_DUE},
                headers=auth,
            ),
            {("body", "amount")},
        ),
        (
            client.post(
                "/capital-calls",
                json={"fund_id": 999, "investor_id": 1, "amount": "1", "due_date": FAR_DUE},
                headers=auth,
            ),
            {("body", "fund_id")},
        ),
        (
            client.post(
                "/capital-calls",
                json={"fund_id": 1, "investor_id": 99999, "amount": "1", "due_date": FAR_DUE},
                headers=auth,
            ),
            {("body", "investor_id")},
        ),
        (
            client.patch("/capital-calls/1/status", json={"status": "lost"}, headers=auth),
            {("body", "status"), ("body", "version")},
        ),
        (
            client.get("/capital-calls?status=lost&limit=0"),
            {("query", "status"), ("query", "limit")},
        ),
        (
            client.get("/capital-calls?due_from=2026-02-01&due_to=2026-01-01"),
            {("query", "due_to")},
        ),
        (client.get("/capital-calls?offset=-1"), {("query", "offset")}),
        (client.get("/capital-calls/search?q=ab"), {("query", "q")}),
        (client.get("/capital-calls/search?q=%20%20%20ab"), {("query", "q")}),
        (client.get("/funds?currency=usd"), {("query", "currency")}),
        (client.get("/dashboard?fund_id=0"), {("query", "fund_id")}),
        (client.get("/capital-calls/abc"), {("path", "call_id")}),
        (
            client.post("/workflows", json={"name": "", "steps": 0, "failure_rate": 101},
                        headers=auth),
            {("body", "name"), ("body", "steps"), ("body", "failure_rate")},
        ),
        (client.get("/retries?status=alive"), {("query", "status")}),
        (
            client.post("/auth/login", json={"email": "not-an-email", "password": ""}),
            {("body", "email"), ("body", "password")},
        ),
        (client.patch("/me", json={"name": " "}, headers=auth), {("body", "name")}),
    ]  # fmt: skip
    for response, expected in cases:
        assert _locations(response) == expected, response.request.url


def test_unknown_ids_are_404(demo_url, make_client):
    client = make_client(demo_url, cache="l1")
    for path in (
        "/funds/999",
        "/capital-calls/999999",
        "/capital-calls/999999/payments",
        "/workflows/999",
        "/workflows/999/executions",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["detail"]["error"] == "not_found"


def test_search_matches_names_case_insensitively_and_treats_wildcards_literally(
    pg_server, demo_url, make_client
):
    client = make_client(demo_url)
    name = sql(pg_server, demo_url, "SELECT name FROM funds WHERE id = 2")
    found = client.get(f"/capital-calls/search?q={name[2:9].upper()}&limit=200").json()
    assert found["items"] and all(
        name[2:9].lower() in (c["fund_name"] + c["investor_name"]).lower() for c in found["items"]
    )
    assert client.get("/capital-calls/search?q=%25%25%25").json()["items"] == []
    assert client.get("/capital-calls/search?q=___").json()["items"] == []


def test_paging_walks_the_whole_filtered_list_once(pg_server, demo_url, make_client):
    client = make_client(demo_url, cache="l1")
    expected = int(sql(pg_server, demo_url, "SELECT count(*) FROM capital_calls WHERE fund_id = 2"))
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get(f"/capital-calls?fund_id=2&limit=200&offset={offset}").json()
        seen += [item["id"] for item in page["items"]]
        offset = page["next_offset"]
    assert len(seen) == len(set(seen)) == expected
    dates = [
        dt.date.fromisoformat(client.get(f"/capital-calls/{i}").json()["due_date"])
        for i in seen[:5]
    ]
    assert dates == sorted(dates)


def test_filters_bind_their_values_and_those_left_out_add_nothing():
    where = Where()
    assert (str(where), where.params) == ("TRUE", {})
    hostile = "x'; DROP TABLE funds; --"
    where.add("currency = :currency", currency=hostile)
    where.add("vintage_year = :vintage", vintage=None)
    where.add("vintage_year >= :since", since=0)
    assert str(where) == "currency = :currency AND vintage_year >= :since"
    assert where.params == {"currency": hostile, "since": 0}
    based = Where("status = :status", status="pending")
    based.add("workflow_id = :workflow", workflow=None)
    assert (str(based), based.params) == ("status = :status", {"status": "pending"})


def test_an_expired_session_is_refused_and_swept_at_the_next_login(
    login, pg_server, demo_url, make_client, cache_mode
):
    client = make_client(demo_url, cache=cache_mode, session_ttl=1)
    auth = login(client, 3)
    # Cached now; the cached session carries its expiry, so it still ends on time.
    assert client.get("/me", headers=auth).status_code == 200
    time.sleep(1.1)
    assert client.get("/me", headers=auth).status_code == 401
    login(client, 3)
    assert sql(pg_server, demo_url, "SELECT count(*) FROM sessions WHERE user_id = 3") == "1"


def test_every_search_term_of_the_load_mix_is_a_valid_search(demo_url, make_client):
    # The mix once drew "#123" from names like "Acme #123": sent unencoded, "#" began a URL
    # fragment, the query arrived empty, and most searches were 422s the demo never counted.
    data = asyncio.run(_mix.dataset(demo_url))
    client = make_client(demo_url)
    assert data["terms"]
    found = 0
    for term in data["terms"]:
        response = client.get(_mix.search_path(term))
        assert response.status_code == 200, (term, response.text)
        found += bool(response.json()["items"])
    assert found >= len(data["terms"]) // 2  # words of the seeded names: most find calls
