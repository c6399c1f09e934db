"""A virtual user: one keep-alive connection, a session (headers, cookies, variables), and the
calls a scenario makes (``await vu.get(...)``, ``vu.check(...)``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from time import perf_counter_ns
from typing import Any

import orjson

from redline.load._http import Connection, HTTPError, Response, Target
from redline.load._metrics import Recorder

_DEFAULT_TIMEOUT = 10.0


class VU:
    """One virtual user; scenario functions receive it as their only argument."""

    def __init__(
        self,
        number: int,
        target: Target,
        recorder: Recorder,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        self.number = number
        self.target = target
        self.recorder = recorder
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        self.cookies: dict[str, str] = {}
        self.vars: dict[str, Any] = {}
        self.iteration = 0
        # Set by the open-model scheduler for the request it dispatches: latency is measured
        # from when the request should have left, not from when it could.
        self.intended_ns: int | None = None
        self._conn: Connection | None = None
        # The Cookie line last sent, and the pairs it was made of.
        self._cookie_pairs: tuple[tuple[str, str], ...] = ()
        self._cookie_header = ""

    async def request(
        self,
        method: str,
        path: str,
        *,
        name: str | None = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        body: bytes | None = None,
    ) -> Response | None:
        """Send one request; record it under ``name`` (default: ``path``). None on error."""
        if json is not None:
            body = orjson.dumps(json)
        fields = None
        if headers or self.headers or self.cookies or json is not None:
            merged = {**self.headers, **headers} if headers else self.headers.copy()
            if self.cookies:
                merged["Cookie"] = self._cookie_line()
            if json is not None:
                merged.setdefault("Content-Type", "application/json")
            fields = list(merged.items())
        name = name or path
        intended, self.intended_ns = self.intended_ns, None
        sent = perf_counter_ns()
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = await Connection.open(self.target, self.timeout)
            response = await conn.request(
                method, self.target.path(path), fields, body, self.timeout
            )
        except HTTPError as exc:
            self._drop_connection()
            self.recorder.record(name, intended, sent, perf_counter_ns(), None, exc.reason)
            return None
        if not response.reusable:
            self._drop_connection()
        status = response.status
        self.recorder.record(
            name,
            intended,
            response.sent_ns,
            response.done_ns,
            status,
            f"status:{status}" if status >= 500 else None,
        )
        if response.has_cookies:
            self._keep_cookies(response)
        return response

    # The verbs hand back ``request``'s coroutine rather than awaiting it in one of their own:
    # one coroutine less to create and to pass through, per request.

    def get(self, path: str, **options: Any) -> Coroutine[Any, Any, Response | None]:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> Coroutine[Any, Any, Response | None]:
        return self.request("POST", path, **options)

    def put(self, path: str, **options: Any) -> Coroutine[Any, Any, Response | None]:
        return self.request("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Coroutine[Any, Any, Response | None]:
        return self.request("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Coroutine[Any, Any, Response | None]:
        return self.request("DELETE", path, **options)

    def check(
        self, response: Response | None, status: int | tuple[int, ...] = 200, name: str = ""
    ) -> bool:
        """True when ``response`` arrived with an expected status; a failed check counts."""
        wanted = (status,) if isinstance(status, int) else tuple(status)
        ok = response is not None and response.status in wanted
        if not ok and response is not None:
            self.recorder.record_check_failure(name or "check", f"status {response.status}")
        return ok

    async def think(self, low: float, high: float | None = None) -> None:
        """Pause like a user reading the page: ``low`` seconds, or uniform in [low, high]."""
        await asyncio.sleep(low if high is None else random.uniform(low, high))

    def _cookie_line(self) -> str:
        # Rebuilt only when the jar changed: a session's cookies rarely do between requests.
        pairs = tuple(self.cookies.items())
        if pairs != self._cookie_pairs:
            self._cookie_pairs = pairs
            self._cookie_header = "; ".join([f"{k}={v}" for k, v in pairs])
        return self._cookie_header

    def _keep_cookies(self, response: Response) -> None:
        for cookie in response.set_cookies():
            key, _, val = cookie.split(";", 1)[0].partition("=")
            self.cookies[key.strip()] = val.strip()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop_connection()
