"""Purge by tag: one ``purge(tags)`` call for the app's write paths, fanned out to every cache.

A write has already happened when its purge runs, so a purge never raises because a CDN is
down: it returns a :class:`PurgeResult` naming, per target, which tags were purged and which
were not, and logs the failures on the ``redline.http.purge`` logger. It raises only for
invalid input (a bad tag, a bad adapter), which is a bug to fix, not an outage to ride out.

Order matters. :class:`Purger` first invalidates the tags in the app's own caches (the
``redline.cache`` data cache and the response cache), then purges every CDN concurrently: a
CDN refetching straight after its purge must get fresh data from the app, not a cached copy
of the old. Each adapter call has a timeout and a bounded number of retries (only for
transport errors, 429 and 5xx: a 4xx is a configuration fault that retrying cannot fix), and
the whole purge has a deadline.

The adapters speak HTTP with one ``httpx.AsyncClient`` per event loop, so connections are
reused between purges. API tokens travel in headers only and never appear in a repr, a
:class:`PurgeOutcome` or a log line.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import ipaddress
import logging
import os
import random
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from time import monotonic
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from redline._exceptions import RedlineError
from redline.http._surrogate import check_surrogate_tags

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("redline.http.purge")

VarnishMode = Literal["xkey", "ban"]

# Varnish refuses request header lines over http_req_hdr_len (8 KiB by default).
_VARNISH_HEADER_BYTES = 6 * 1024
# Fastly's API reads up to 256 keys per batch purge; a header of 8 KiB passes every proxy.
_FASTLY_MAX_KEYS = 256
_FASTLY_HEADER_BYTES = 8 * 1024
# Cloudflare's API reference: "You may purge up to 30 tags, hosts, or prefixes in one API
# call"; newer plans allow more, which max_tags_per_call raises to.
_CLOUDFLARE_MAX_TAGS = 30
# Characters that mean nothing special in a PCRE pattern and need no quoting in a ban
# expression; every other one is written as \x{..}, so no tag can widen a ban.
_REGEX_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:/@=")
_LOOPBACK_NAMES = frozenset({"localhost"})
_VARNISH_HINT = (
    "is the {method} handler of redline's VCL in place, and this host in its purgers ACL? "
    "See docs/http-cache.md, 'Behind Varnish'"
)


class PurgeError(RedlineError, ValueError):
    """A purger or purge adapter was configured with invalid values."""


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    """What one target (a Varnish node, a Fastly service, a cache...) did with a purge.

    ``purged`` and ``failed`` split the tags; ``attempts`` counts the calls made, retries
    included; ``count`` is how many objects the target dropped when it says so (Varnish xkey).
    """

    target: str
    purged: tuple[str, ...]
    failed: tuple[str, ...] = ()
    attempts: int = 0
    error: str | None = None
    count: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """The outcome of one ``purge(tags)``, one :class:`PurgeOutcome` per target."""

    tags: tuple[str, ...]
    outcomes: tuple[PurgeOutcome, ...]

    @property
    def ok(self) -> bool:
        """True when every target purged every tag."""
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> tuple[PurgeOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if not outcome.ok)

    @property
    def failed_tags(self) -> tuple[str, ...]:
        """Tags some target did not purge: what to purge again later."""
        failed = {tag for outcome in self.outcomes for tag in outcome.failed}
        return tuple(tag for tag in self.tags if tag in failed)


class TagInvalidator(Protocol):
    """What Purger needs of a cache: ``redline.cache.Cache`` and ``SyncCache`` both fit."""

    def invalidate_tags(self, *tags: str) -> Awaitable[None] | None: ...


class _CallFailed(Exception):
    """An HTTP call failed for good (permanent error, or retries used up)."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class PurgeAdapter:
    """Base of the CDN adapters: HTTP calls with a timeout and bounded retries.

    ``timeout`` bounds each call (seconds); a call failing with a transport error, a timeout,
    429 or a 5xx is tried again up to ``retries`` times, after ``backoff`` seconds doubling each
    time (with jitter, or the server's ``Retry-After``), never waiting over ``max_backoff``.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        _check_seconds(self, "timeout", timeout, positive=True)
        _check_seconds(self, "backoff", backoff, positive=False)
        _check_seconds(self, "max_backoff", max_backoff, positive=False)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise PurgeError(f"{type(self).__name__}(retries={retries!r}): give an int >= 0")
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        # Imported here so that redline.http works without the web extra until a purge is set up.
        self._httpx = _import_httpx(self)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    @property
    def targets(self) -> tuple[str, ...]:
        """The names this adapter reports outcomes under, one per target."""
        raise NotImplementedError

    async def purge(self, tags: tuple[str, ...]) -> list[PurgeOutcome]:
        """Purge valid, de-duplicated ``tags``; one outcome per target, never raising."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the connections opened from the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _client(self) -> httpx.AsyncClient:
        # A client's connections belong to the loop that opened them: a SyncPurger's thread
        # and the app's loop each get their own.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                headers={"user-agent": "redline-purge"},
            )
            self._clients[loop] = client
        return client

    async def _call(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json: Any = None,
        check: Callable[[httpx.Response], str | None],
        hint: str = "",
    ) -> tuple[httpx.Response, int]:
        """Send with retries; ``check`` returns why a 2xx answer is still a failure, or None.

        ``hint`` is added to the error of a 4xx other than 429: what to look at to fix it.
        """
        client = self._client()
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await client.request(method, url, headers=headers, json=json)
            except self._httpx.TransportError as exc:
                transient = True
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    problem = check(response)
                    if problem is None:
                        return response, attempt
                    transient = False
                else:
                    transient = response.status_code == 429 or response.status_code >= 500
                    problem = f"HTTP {response.status_code} {_excerpt(response.text)}".rstrip()
                    if hint and not transient:
                        problem = f"{problem} ({hint})"
                    retry_after = _retry_after(response)
            problem = self._redact(problem)
            if not transient or attempt > self.retries:
                raise _CallFailed(f"{method} {url}: {problem}", attempt)
            await asyncio.sleep(self._delay(attempt, retry_after))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff) * random.uniform(0.5, 1)

    def _redact(self, text: str) -> str:
        return text

    async def _batches(
        self,
        target: str,
        batches: Iterable[tuple[str, ...]],
        call: Callable[[tuple[str, ...]], Awaitable[tuple[int, int | None]]],
    ) -> PurgeOutcome:
        """Run ``call`` per batch in turn, collecting one outcome; a failed batch does not stop
        the next, so one bad tag set cannot hold back the others."""
        purged: list[str] = []
        failed: list[str] = []
        errors: list[str] = []
        attempts = 0
        count: int | None = None
        for batch in batches:
            try:
                used, dropped = await call(batch)
            except _CallFailed as exc:
                attempts += exc.attempts
                failed.extend(batch)
                errors.append(str(exc))
                continue
            attempts += used
            purged.extend(batch)
            if dropped is not None:
                count = (count or 0) + dropped
        return PurgeOutcome(
            target=target,
            purged=tuple(purged),
            failed=tuple(failed),
            attempts=attempts,
            error="; ".join(errors) or None,
            count=count,
        )


class VarnishPurger(PurgeAdapter):
    """Purge a fleet of Varnish servers by tag, through redline's VCL (docs/http-cache.md).

    ``mode="xkey"`` sends ``PURGE`` with ``xkey-purge: TAGS`` (vmod xkey drops tagged objects
    at once; ``soft=True`` sends ``xkey-softpurge`` instead, which only makes them stale so
    they stay servable within grace). ``mode="ban"`` sends ``BAN`` with ``xkey-ban: REGEX``
    matching any of the tags exactly, for servers without vmod xkey. Every URL is purged
    concurrently and reported as its own target.
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        *,
        mode: VarnishMode = "xkey",
        soft: bool = False,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        if mode not in ("xkey", "ban"):
            raise PurgeError(f"VarnishPurger(mode={mode!r}): choose 'xkey' or 'ban'")
        if soft and mode == "ban":
            raise PurgeError(
                "VarnishPurger(mode='ban', soft=True): a ban cannot be soft; use mode='xkey'"
            )
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise PurgeError("VarnishPurger(urls=[]): give at least one Varnish URL")
        self.urls = tuple(dict.fromkeys(_check_url(self, url, "urls") for url in listed))
        self.mode = mode
        self.soft = bool(soft)

    def __repr__(self) -> str:
        return f"VarnishPurger(urls={list(self.urls)!r}, mode={self.mode!r}, soft={self.soft!r})"

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(f"varnish {url}" for url in self.urls)

    async def purge(self, tags: tuple[str, ...]) -> list[PurgeOutcome]:
        outcomes = await asyncio.gather(*(self._purge_one(url, tags) for url in self.urls))
        return list(outcomes)

    async def _purge_one(self, url: str, tags: tuple[str, ...]) -> PurgeOutcome:
        if self.mode == "ban":
            batches = _by_size(tags, _VARNISH_HEADER_BYTES, len(_ban_regex(())), _ban_cost)
        else:
            batches = _by_size(tags, _VARNISH_HEADER_BYTES, 0, lambda tag: len(tag) + 1)

        async def call(batch: tuple[str, ...]) -> tuple[int, int | None]:
            if self.mode == "ban":
                _, attempts = await self._call(
                    "BAN",
                    url + "/",
                    headers={"xkey-ban": _ban_regex(batch)},
                    check=_no_check,
                    hint=_VARNISH_HINT.format(method="BAN"),
                )
                return attempts, None
            header = "xkey-softpurge" if self.soft else "xkey-purge"
            response, attempts = await self._call(
                "PURGE",
                url + "/",
                headers={header: " ".join(batch)},
                check=_purged_count,
                hint=_VARNISH_HINT.format(method="PURGE"),
            )
            return attempts, int(response.headers["xkey-purged"])

        return await self._batches(f"varnish {url}", batches, call)


class FastlyPurger(PurgeAdapter):
    """Purge a Fastly service by surrogate key: ``POST /service/{id}/purge``.

    Keys go in the ``Surrogate-Key`` header, at most 256 per call (Fastly's batch limit);
    ``soft=True`` marks content stale instead of evicting it (``Fastly-Soft-Purge: 1``), so
    Fastly can keep serving it within stale-while-revalidate/stale-if-error. The token needs
    the ``purge_select`` scope.
    """

    def __init__(
        self,
        service_id: str,
        token: str,
        *,
        soft: bool = False,
        base_url: str = "https://api.fastly.com",
        max_keys_per_call: int = _FASTLY_MAX_KEYS,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.service_id = _check_id(self, "service_id", service_id)
        self._token = _check_token(self, token)
        self.soft = bool(soft)
        self.base_url = _check_url(self, base_url, "base_url", secret=True)
        self.max_keys_per_call = _check_batch(self, "max_keys_per_call", max_keys_per_call)

    def __repr__(self) -> str:
        return (
            f"FastlyPurger(service_id={self.service_id!r}, soft={self.soft!r}, "
            f"base_url={self.base_url!r})"
        )

    @property
    def targets(self) -> tuple[str, ...]:
        return (f"fastly service {self.service_id}",)

    async def purge(self, tags: tuple[str, ...]) -> list[PurgeOutcome]:
        url = f"{self.base_url}/service/{quote(self.service_id, safe='')}/purge"
        batches = _by_size(
            tags, _FASTLY_HEADER_BYTES, 0, lambda tag: len(tag) + 1, self.max_keys_per_call
        )

        async def call(batch: tuple[str, ...]) -> tuple[int, int | None]:
            headers = {
                "fastly-key": self._token,
                "surrogate-key": " ".join(batch),
                "accept": "application/json",
            }
            if self.soft:
                headers["fastly-soft-purge"] = "1"
            _, attempts = await self._call("POST", url, headers=headers, check=_no_check)
            return attempts, None

        return [await self._batches(self.targets[0], batches, call)]

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "[token]")


class CloudflarePurger(PurgeAdapter):
    """Purge a Cloudflare zone by cache tag: ``POST /zones/{id}/purge_cache {"tags": [...]}``.

    Batches hold at most ``max_tags_per_call`` tags (30, the documented limit that holds on
    every plan; raise it if your plan allows more) and are sent one after another, since
    Cloudflare rate-limits purge calls per account. The API token needs the ``Cache Purge``
    permission; a ``"success": false`` answer counts as a failure even with HTTP 200.
    """

    def __init__(
        self,
        zone_id: str,
        token: str,
        *,
        base_url: str = "https://api.cloudflare.com/client/v4",
        max_tags_per_call: int = _CLOUDFLARE_MAX_TAGS,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.zone_id = _check_id(self, "zone_id", zone_id)
        self._token = _check_token(self, token)
        self.base_url = _check_url(self, base_url, "base_url", secret=True)
        self.max_tags_per_call = _check_batch(self, "max_tags_per_call", max_tags_per_call)

    def __repr__(self) -> str:
        return f"CloudflarePurger(zone_id={self.zone_id!r}, base_url={self.base_url!r})"

    @property
    def targets(self) -> tuple[str, ...]:
        return (f"cloudflare zone {self.zone_id}",)

    async def purge(self, tags: tuple[str, ...]) -> list[PurgeOutcome]:
        url = f"{self.base_url}/zones/{quote(self.zone_id, safe='')}/purge_cache"
        batches = [
            tags[i : i + self.max_tags_per_call]
            for i in range(0, len(tags), self.max_tags_per_call)
        ]
        headers = {"authorization": f"Bearer {self._token}", "accept": "application/json"}

        async def call(batch: tuple[str, ...]) -> tuple[int, int | None]:
            _, attempts = await self._call(
                "POST", url, headers=headers, json={"tags": list(batch)}, check=_cloudflare_ok
            )
            return attempts, None

        return [await self._batches(self.targets[0], batches, call)]

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "[token]")


class Purger:
    """Purge tags everywhere they are cached: the app's caches first, then every CDN.

    ``cache`` is a ``redline.cache`` cache (or several: the data cache and the response
    cache) whose ``invalidate_tags`` runs first; the adapters then run concurrently. The whole
    purge ends within ``timeout`` seconds; a target still busy then is reported as failed.
    """

    def __init__(
        self,
        *adapters: PurgeAdapter,
        cache: TagInvalidator | Sequence[TagInvalidator] | None = None,
        timeout: float = 10.0,
    ) -> None:
        for adapter in adapters:
            if not isinstance(adapter, PurgeAdapter):
                raise PurgeError(
                    f"Purger({adapter!r}): adapters must be VarnishPurger, FastlyPurger, "
                    "CloudflarePurger or another PurgeAdapter"
                )
        caches = [] if cache is None else [cache] if not isinstance(cache, Sequence) else cache
        for each in caches:
            if not callable(getattr(each, "invalidate_tags", None)):
                raise PurgeError(
                    f"Purger(cache={each!r}): give a redline.cache Cache or SyncCache, or "
                    "anything with an invalidate_tags(*tags) method"
                )
        _check_seconds(self, "timeout", timeout, positive=True)
        self.adapters = tuple(adapters)
        self.caches = tuple(caches)
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"Purger({', '.join(map(repr, self.adapters))}, timeout={self.timeout!r})"

    async def purge(self, tags: Iterable[str]) -> PurgeResult:
        """Purge ``tags`` from every cache and CDN; raise only for invalid tags."""
        checked = check_surrogate_tags(tags)
        if not checked:
            return PurgeResult(tags=(), outcomes=())
        deadline = monotonic() + self.timeout
        outcomes = [
            await self._invalidate(cache, number, checked, deadline)
            for number, cache in enumerate(self.caches, 1)
        ]
        results = await asyncio.gather(
            *(self._run(adapter, checked, deadline) for adapter in self.adapters)
        )
        outcomes.extend(outcome for result in results for outcome in result)
        for outcome in outcomes:
            if outcome.ok:
                log.debug("purged %s on %s", " ".join(outcome.purged), outcome.target)
            else:
                log.warning(
                    "purge of %s on %s failed after %d attempt(s): %s",
                    " ".join(outcome.failed),
                    outcome.target,
                    outcome.attempts,
                    outcome.error,
                )
        return PurgeResult(tags=checked, outcomes=tuple(outcomes))

    async def _invalidate(
        self, cache: TagInvalidator, number: int, tags: tuple[str, ...], deadline: float
    ) -> PurgeOutcome:
        # Named by type, never by repr, which could hold a Redis URL and its password.
        target = f"cache {type(cache).__name__}"
        if len(self.caches) > 1:
            target += f" #{number}"
        try:
            async with asyncio.timeout(max(deadline - monotonic(), 0)):
                pending = cache.invalidate_tags(*tags)
                if inspect.isawaitable(pending):
                    await pending
        except TimeoutError:
            error = f"timed out after {self.timeout}s"
        except Exception as exc:
            log.exception("invalidating tags %s in %s raised", " ".join(tags), target)
            error = f"{type(exc).__name__}: {exc}"
        else:
            return PurgeOutcome(target=target, purged=tags, attempts=1)
        return PurgeOutcome(target=target, purged=(), failed=tags, attempts=1, error=error)

    async def _run(
        self, adapter: PurgeAdapter, tags: tuple[str, ...], deadline: float
    ) -> list[PurgeOutcome]:
        try:
            async with asyncio.timeout(max(deadline - monotonic(), 0)):
                return await adapter.purge(tags)
        except TimeoutError:
            error = f"timed out: the purge deadline is {self.timeout}s"
        except Exception as exc:
            # A bug in an adapter must not undo the caller's write either.
            log.exception("purge adapter %r raised", adapter)
            error = f"{type(exc).__name__}: {exc}"
        return [
            PurgeOutcome(target=target, purged=(), failed=tags, error=error)
            for target in adapter.targets
        ]

    async def aclose(self) -> None:
        """Close the adapters' connections opened from the running event loop."""
        for adapter in self.adapters:
            await adapter.aclose()

    async def __aenter__(self) -> Purger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class SyncPurger:
    """A :class:`Purger` for sync apps (Django, Flask): ``purge(tags)`` blocks until done.

    The purge runs on an event loop in a daemon thread this object owns, started at the first
    purge; ``close()`` stops it. Pass a ``SyncCache`` as ``cache``: it is called from that thread.
    """

    def __init__(
        self,
        *adapters: PurgeAdapter,
        cache: TagInvalidator | Sequence[TagInvalidator] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.purger = Purger(*adapters, cache=cache, timeout=timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Sync{self.purger!r}"

    def purge(self, tags: Iterable[str]) -> PurgeResult:
        """Purge ``tags`` from every cache and CDN; raise only for invalid tags."""
        checked = check_surrogate_tags(tags)
        future = asyncio.run_coroutine_threadsafe(self.purger.purge(checked), self._running())
        return future.result()

    def close(self) -> None:
        """Close the connections and stop the loop thread; safe to call twice."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.purger.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _running(self) -> asyncio.AbstractEventLoop:
        if self._pid != os.getpid():
            # A forked worker (gunicorn --preload) inherits the loop but not its thread, and
            # maybe a lock held at the fork; it starts afresh, alone in its new process.
            self._loop = self._thread = None
            self._lock = threading.Lock()
            self._pid = os.getpid()
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="redline-purge", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def __enter__(self) -> SyncPurger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ban_regex(tags: tuple[str, ...]) -> str:
    """A PCRE matching an xkey header that holds any of ``tags`` as a whole key."""
    escaped = "|".join("".join(map(_regex_char, tag)) for tag in tags)
    # xkey splits its header on spaces and commas, so those bound a key.
    return f"(^|[[:space:],])({escaped})($|[[:space:],])"


def _regex_char(char: str) -> str:
    return char if char in _REGEX_SAFE else f"\\x{{{ord(char):02x}}}"


def _ban_cost(tag: str) -> int:
    return sum(1 if char in _REGEX_SAFE else 6 for char in tag) + 1


def _by_size(
    tags: tuple[str, ...],
    budget: int,
    overhead: int,
    cost: Callable[[str], int],
    max_count: int | None = None,
) -> list[tuple[str, ...]]:
    """Split tags into batches whose header fits ``budget`` bytes (and ``max_count`` tags)."""
    batches: list[tuple[str, ...]] = []
    batch: list[str] = []
    used = overhead
    for tag in tags:
        size = cost(tag)
        if batch and (used + size > budget or (max_count and len(batch) >= max_count)):
            batches.append(tuple(batch))
            batch, used = [], overhead
        batch.append(tag)
        used += size
    if batch:
        batches.append(tuple(batch))
    return batches


def _import_httpx(owner: object) -> ModuleType:
    try:
        return importlib.import_module("httpx")
    except ImportError:
        raise PurgeError(
            f"{type(owner).__name__} needs httpx: pip install 'redline[web]'"
        ) from None


def _no_check(response: httpx.Response) -> str | None:
    return None


def _purged_count(response: httpx.Response) -> str | None:
    count = response.headers.get("xkey-purged", "")
    if not count.isdigit():
        return (
            f"HTTP {response.status_code} without an xkey-purged count: the VCL has no xkey "
            "PURGE handler; see docs/http-cache.md, 'Behind Varnish'"
        )
    return None


def _cloudflare_ok(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} with a body that is not JSON"
    if isinstance(body, dict) and body.get("success") is True:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    return f"HTTP {response.status_code} success=false: {_excerpt(str(errors))}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _check_seconds(owner: object, name: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PurgeError(f"{type(owner).__name__}({name}={value!r}): give a number of seconds")
    if value < 0 or (positive and value == 0):
        raise PurgeError(
            f"{type(owner).__name__}({name}={value!r}): must be {'> 0' if positive else '>= 0'}"
        )


def _check_batch(owner: object, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PurgeError(f"{type(owner).__name__}({name}={value!r}): give an int >= 1")
    return value


def _check_id(owner: object, name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise PurgeError(
            f"{type(owner).__name__}({name}={value!r}): give the non-empty id from the "
            "CDN's dashboard, without surrounding spaces"
        )
    return value


def _check_token(owner: object, value: object) -> str:
    # The token itself is never echoed, not even in this error.
    if not isinstance(value, str) or not value:
        raise PurgeError(f"{type(owner).__name__}(token=...): give the API token as a str")
    if any(not 0x21 <= ord(char) <= 0x7E for char in value):
        raise PurgeError(
            f"{type(owner).__name__}(token=...): the token holds whitespace or non-ASCII "
            "characters; copy it again without spaces or line breaks"
        )
    return value


def _check_url(owner: object, value: object, name: str, *, secret: bool = False) -> str:
    where = f"{type(owner).__name__}({name}={value!r})"
    if not isinstance(value, str):
        raise PurgeError(f"{where}: give a URL such as 'http://10.0.0.5:6081'")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PurgeError(f"{where}: give an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise PurgeError(f"{where}: a query or fragment has no place in a purge URL")
    if secret and parts.scheme == "http" and not _is_loopback(parts.hostname):
        # Secure by default: the API token would cross the network in clear text.
        raise PurgeError(f"{where}: the API token needs https:// (plain http only to loopback)")
    return value.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
