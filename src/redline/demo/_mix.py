"""The load ``redline demo`` puts on the app: the seven user scenarios of the two platforms.

The seeds' load tests modelled users who browse the dashboard, list and filter capital calls,
open one, search, create calls, update their status, and run workflows. Each is a flow here,
with a share of the iterations (each user draws its next flow by these shares, so the mix of
requests is the same in every step, whatever each flow costs):

==================  =====  ====================================================================
scenario            share  one iteration
==================  =====  ====================================================================
browse-dashboard     18 %  the dashboard over all funds, then one fund's
list-calls           28 %  a fund's issued calls, first page, sometimes the second
view-call            28 %  a call's detail and its payments
search               14 %  a search on a fragment of an investor or fund name
create-call           3 %  (logged in) a new draft call for a fund and investor
update-status         5 %  (logged in) read a call, move it to a status allowed next
run-workflow          4 %  (logged in) read a workflow, run it, read its executions
==================  =====  ====================================================================

About one request in twelve is a write, as on a back-office platform where most people read
and a few change things. Writers are already logged in: the runner logs a pool of users in
before the first step (as k6's ``setup()`` would) and hands their tokens out, so the load
measures serving, not a login storm (scrypt is meant to be slow; the app queues logins one per
core so that a real storm cannot starve logged-in users).

Which fund, call, search term or workflow a user asks for is skewed as real traffic is: the
id of rank ``k`` is drawn with probability proportional to ``1 / k**0.99``, the Zipf
distribution with YCSB's default exponent, the usual model of request popularity in cache
benchmarks. Over 20,000 calls the first 1 % of the ids gets about half of the views and the
first fifth about 85 %; the rest still come up, so the caches see a long tail. Each user has
its own seeded random generator, so a run is repeatable.

Browsers revalidate: a user remembers the ``ETag`` of every URL it read and sends it back in
``If-None-Match``, as a browser does with ``max-age=0``. Without HTTP caching the app sends no
ETags, so nothing changes; with it, unchanged pages come back 304.

Throughput steps run closed-model users without think time (how much can the app serve);
the ``users`` step runs 1000 users who think 2-6 s between iterations (can it hold them): they
arrive evenly over a ramp, each starting after a random 0-3 s, and the step is judged on the
hold that follows (``_runner``), as a load test judges a plateau, not the arrival.

Requests are named by template (``view-call`` for every ``/capital-calls/{id}``); ``READS``
names the read requests, whose rate the throughput target compares.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from redline.load import VU, ConstantVUs, Plan, RampingVUs, Scenario, Stage

READS = frozenset(
    {
        "dashboard",
        "dashboard-fund",
        "list-calls",
        "list-calls-page-2",
        "view-call",
        "call-payments",
        "search",
        "read-before-update",
        "workflow",
        "executions",
    }
)
SHARES = {
    "browse-dashboard": 18,
    "list-calls": 28,
    "view-call": 28,
    "search": 14,
    "create-call": 3,
    "update-status": 5,
    "run-workflow": 4,
}
# The status update-status moves a call to: each one CALL_TRANSITIONS allows.
NEXT_STATUS = {"draft": "issued", "issued": "overdue", "overdue": "paid"}
PASSWORD = "redline-demo"


async def dataset(dsn: str) -> dict[str, Any]:
    """What the scenarios draw from: row counts, search terms and the users to log in as."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        counts = {
            table: await connection.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}")
            for table in ("funds", "investors", "capital_calls", "workflows", "users")
        }
        names = [
            row[0]
            for row in await connection.fetch(
                "(SELECT name FROM funds ORDER BY id LIMIT 40)"
                " UNION ALL (SELECT name FROM investors ORDER BY id LIMIT 200)"
            )
        ]
        emails = [
            row[0]
            for row in await connection.fetch("SELECT email FROM users ORDER BY id LIMIT 500")
        ]
    finally:
        await connection.close()
    # Words of letters only: a name's "#123" would be no search anyone types (and, sent
    # unencoded, a URL fragment: an empty q and a 422).
    terms = sorted(
        {
            word.lower()[:5]
            for name in names
            for word in name.split()
            if len(word) >= 4 and word.isalpha()
        }
    )
    return {**counts, "terms": terms or ["fund"], "emails": emails}


ZIPF_EXPONENT = 0.99
_CUMULATIVE: dict[int, list[float]] = {}


def _zipf_weights(n: int) -> list[float]:
    weights = _CUMULATIVE.get(n)
    if weights is None:
        weights = _CUMULATIVE[n] = list(
            itertools.accumulate(rank**-ZIPF_EXPONENT for rank in range(1, n + 1))
        )
    return weights


def _skewed(rng: random.Random, n: int) -> int:
    """An id from 1 to ``n``, Zipf-distributed: id 1 the most popular."""
    weights = _zipf_weights(max(n, 1))
    return 1 + bisect.bisect(weights, rng.random() * weights[-1])


class _User:
    """What one virtual user remembers: its random generator, ETags and session."""

    def __init__(self, vu: VU, data: Mapping[str, Any], scenario: str) -> None:
        self.rng = random.Random(f"{scenario}:{vu.number}")
        self.etags: dict[str, str] = {}
        self.data = data

    async def get(self, vu: VU, path: str, name: str) -> Any:
        etag = self.etags.get(path)
        headers = {"If-None-Match": etag} if etag else None
        response = await vu.get(path, name=name, headers=headers)
        if response is not None:
            tag = response.header("etag")
            if tag:
                if len(self.etags) > 2000:
                    self.etags.clear()
                self.etags[path] = tag
            vu.check(response, status=(200, 304), name=name)
        return response


def _user(vu: VU, data: Mapping[str, Any], scenario: str) -> _User:
    user = vu.vars.get("_user")
    if user is None:
        user = vu.vars["_user"] = _User(vu, data, scenario)
    return user


async def _login(vu: VU, user: _User) -> bool:
    """Authenticate this iteration's requests (a writer's); readers stay anonymous."""
    if "Authorization" in vu.headers:
        return True
    tokens = user.data.get("tokens")
    token = vu.vars.get("token")
    if token is None and tokens:
        token = vu.vars["token"] = tokens[vu.number % len(tokens)]
    if token is not None:
        vu.headers["Authorization"] = f"Bearer {token}"
        return True
    emails = user.data["emails"]
    if not emails:
        return False
    email = emails[vu.number % len(emails)]
    response = await vu.post(
        "/auth/login", name="login", json={"email": email, "password": PASSWORD}
    )
    if not vu.check(response, status=200, name="login"):
        return False
    token = vu.vars["token"] = response.json()["token"]
    vu.headers["Authorization"] = f"Bearer {token}"
    return True


async def log_in(base_url: str, emails: list[str], count: int) -> list[str]:
    """Session tokens of the first ``count`` users, logged in through the API (setup)."""
    import httpx

    tokens = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for email in emails[:count]:
            response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
            response.raise_for_status()
            tokens.append(response.json()["token"])
    return tokens


def _json(response: Any) -> Any:
    if response is None or response.status != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def search_path(term: str) -> str:
    """The search flow's request for ``term``, encoded."""
    return f"/capital-calls/search?q={quote(term)}&limit=20"


def scenarios(data: Mapping[str, Any]) -> dict[str, Any]:
    """The seven flows, as ``async def flow(vu)`` functions over ``data``."""

    async def browse_dashboard(vu: VU) -> None:
        user = _user(vu, data, "browse-dashboard")
        await user.get(vu, "/dashboard", "dashboard")
        fund = _skewed(user.rng, data["funds"])
        await user.get(vu, f"/dashboard?fund_id={fund}", "dashboard-fund")

    async def list_calls(vu: VU) -> None:
        user = _user(vu, data, "list-calls")
        fund = _skewed(user.rng, data["funds"])
        base = f"/capital-calls?fund_id={fund}&status=issued&limit=20"
        await user.get(vu, base, "list-calls")
        if user.rng.random() < 0.3:
            await user.get(vu, base + "&offset=20", "list-calls-page-2")

    async def view_call(vu: VU) -> None:
        user = _user(vu, data, "view-call")
        call = _skewed(user.rng, data["capital_calls"])
        await user.get(vu, f"/capital-calls/{call}", "view-call")
        await user.get(vu, f"/capital-calls/{call}/payments", "call-payments")

    async def search(vu: VU) -> None:
        user = _user(vu, data, "search")
        terms = data["terms"]
        term = terms[_skewed(user.rng, len(terms)) - 1]
        await user.get(vu, search_path(term), "search")

    async def create_call(vu: VU) -> None:
        user = _user(vu, data, "create-call")
        if not await _login(vu, user):
            return
        body = {
            "fund_id": _skewed(user.rng, data["funds"]),
            "investor_id": user.rng.randint(1, max(data["investors"], 1)),
            "amount": f"{user.rng.randint(1_000, 500_000)}.00",
            "due_date": (dt.date(2026, 1, 1) + dt.timedelta(days=user.rng.randint(0, 365)))
            .isoformat(),
        }  # fmt: skip
        response = await vu.post("/capital-calls", name="create-call", json=body)
        vu.check(response, status=201, name="create-call")

    async def update_status(vu: VU) -> None:
        user = _user(vu, data, "update-status")
        if not await _login(vu, user):
            return
        call = _skewed(user.rng, data["capital_calls"])
        # Fresh read (no If-None-Match): the version must be the current one.
        response = await vu.get(f"/capital-calls/{call}", name="read-before-update")
        current = _json(response)
        if current is None:
            vu.check(response, status=200, name="read-before-update")
            return
        status = NEXT_STATUS.get(current.get("status"))
        if status is None:  # paid or cancelled: final
            return
        response = await vu.patch(
            f"/capital-calls/{call}/status",
            name="update-status",
            json={"status": status, "version": current["version"]},
        )
        # 409: another user changed it first (optimistic concurrency), a correct answer.
        vu.check(response, status=(200, 409), name="update-status")

    async def run_workflow(vu: VU) -> None:
        user = _user(vu, data, "run-workflow")
        if not await _login(vu, user):
            return
        workflow = _skewed(user.rng, data["workflows"])
        await user.get(vu, f"/workflows/{workflow}", "workflow")
        response = await vu.post(f"/workflows/{workflow}/run", name="run-workflow")
        vu.check(response, status=201, name="run-workflow")
        await user.get(vu, f"/workflows/{workflow}/executions?limit=20", "executions")

    return {
        "browse-dashboard": browse_dashboard,
        "list-calls": list_calls,
        "view-call": view_call,
        "search": search,
        "create-call": create_call,
        "update-status": update_status,
        "run-workflow": run_workflow,
    }


def _thinking(flow: Any, low: float, high: float) -> Any:
    async def with_think_time(vu: VU) -> None:
        if vu.iteration == 0:
            await vu.think(0, 3)  # spread the first arrivals
        await flow(vu)
        await vu.think(low, high)

    return with_think_time


def mixed(data: Mapping[str, Any]) -> Any:
    """One iteration of the mix: a scenario drawn by its share, by the user's own generator.

    Drawing per iteration keeps the request mix the same whatever each scenario costs: with a
    fixed set of users per scenario and no think time, the fast (cached) scenarios would loop
    more often and crowd out the slow ones, flattering every cache.
    """
    flows = scenarios(data)
    names = list(SHARES)
    weights = [SHARES[name] for name in names]

    async def mix(vu: VU) -> None:
        user = _user(vu, data, "mix")
        vu.headers.pop("Authorization", None)  # writers authenticate their own iterations
        await flows[user.rng.choices(names, weights)[0]](vu)

    return mix


def plan(
    step: Any, data: Mapping[str, Any], *, duration: float, vus: int, ramp: float = 0.0
) -> Plan:
    """The mix for one step: ``vus`` users for ``duration`` seconds, thinking in ``users``;
    with ``ramp``, the users arrive evenly over that many seconds first, then stay."""
    if vus < 1:
        raise ValueError("the mix needs at least one user")
    think = bool(getattr(step, "users", False))
    flow = mixed(data)
    executor: Any = (
        ConstantVUs(vus, duration)
        if ramp <= 0
        else RampingVUs(stages=(Stage(ramp, vus), Stage(duration, vus)), graceful_ramp_down=0)
    )
    return Plan(
        scenarios=(Scenario("mix", executor, _thinking(flow, 2.0, 6.0) if think else flow),),
        source=f"redline demo ({getattr(step, 'name', step)})",
    )
