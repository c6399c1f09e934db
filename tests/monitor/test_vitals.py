"""Web Vitals: the beacon script, the ingestion endpoint and its aggregation, unit by unit and
in a real headless Chromium."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from contextlib import contextmanager
from importlib.resources import files

import httpx
import pytest
import uvicorn
from browser import chromium, devtools
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from redline import monitor

SCRIPT = files("redline.monitor").joinpath("static", "vitals.js").read_bytes()
NAMES = ("LCP", "FCP", "TTFB", "INP", "CLS")


async def call(app, method="POST", path="/vitals", body=b"", headers=(), chunks=None):
    """Run one request through ``app``; ``chunks`` streams the body in several messages."""
    parts = list(chunks) if chunks is not None else [body]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def beacon(*metrics, page="/shop/42", nav="navigate", **extra):
    """A beacon's body; metrics as ``(name, value)`` pairs or as raw objects."""
    items = [
        {"name": m[0], "value": m[1], "id": f"id-{i}"} if isinstance(m, tuple) else m
        for i, m in enumerate(metrics)
    ]
    return json.dumps({"page": page, "metrics": items, "nav": nav, **extra}).encode()


TEXT = [(b"content-type", b"text/plain;charset=UTF-8")]
GOOD = ("LCP", 1200.0)


@pytest.fixture
def registry():
    return monitor.Registry()


@pytest.fixture
def app(registry):
    return monitor.VitalsApp(registry, max_metrics=5)


def state(app, registry):
    """Everything a beacon could change: the exposition and the summary."""
    return monitor.generate_latest(registry), app.summary()


# -- accepting -------------------------------------------------------------------------------


async def test_a_text_plain_beacon_as_sendbeacon_sends_it_is_recorded(app, registry):
    status, _, body = await call(app, body=beacon(("LCP", 1234.5), ("CLS", 0.05)), headers=TEXT)

    assert (status, body) == (204, b"")
    lcp = registry.get("web_vitals_lcp_seconds").labels("/shop/:id").snapshot()
    assert (lcp.count, lcp.sum) == (1, pytest.approx(1.2345))
    cls = registry.get("web_vitals_cls").labels("/shop/:id").snapshot()
    assert (cls.count, cls.sum) == (1, pytest.approx(0.05))


@pytest.mark.parametrize("content_type", [b"application/json", b"text/plain", None])
async def test_json_text_and_untyped_bodies_are_accepted(app, content_type):
    headers = [(b"content-type", content_type)] if content_type else []

    status, _, _ = await call(app, body=beacon(GOOD), headers=headers)

    assert status == 204
    assert app.summary()["/shop/:id"]["LCP"].count == 1


async def test_accepted_beacons_are_counted_by_navigation_type(app, registry):
    for nav in ("navigate", "reload", "teleport"):
        await call(app, body=beacon(GOOD, nav=nav), headers=TEXT)
    await call(app, body=json.dumps({"page": "/", "metrics": [dict(name="FCP", value=1)]}).encode())

    beacons = registry.get("web_vitals_beacons_total")
    counts = {nav: beacons.labels(nav).value for nav in ("navigate", "reload", "other")}
    assert counts == {"navigate": 1, "reload": 1, "other": 2}


async def test_unknown_keys_are_ignored_so_newer_clients_still_report(app):
    metric = {"name": "INP", "value": 120, "id": "x", "delta": 120, "rating": "good"}

    status, _, _ = await call(app, body=beacon(metric, release="2.0"), headers=TEXT)

    assert status == 204
    assert app.summary()["/shop/:id"]["INP"].p75 == pytest.approx(120, rel=0.01)


def test_ingest_returns_the_beacon_as_recorded(app):
    recorded = app.ingest(beacon(("TTFB", 80), ("INP", 0), page="/a/7?q=1#x", nav="reload"))

    assert recorded == monitor.Beacon("/a/:id", "reload", (("TTFB", 80.0), ("INP", 0.0)))


def test_the_histograms_are_in_the_registrys_exposition(app, registry):
    app.ingest(beacon(*[(name, 100 if name != "CLS" else 0.3) for name in NAMES]))

    text = monitor.generate_latest(registry).decode()

    for name in ("lcp", "fcp", "ttfb", "inp"):
        assert f'web_vitals_{name}_seconds_bucket{{page="/shop/:id",le="0.1"}} 1\n' in text
        assert f'web_vitals_{name}_seconds_quantiles{{page="/shop/:id",quantile="0.5"}}' in text
    assert 'web_vitals_cls_bucket{page="/shop/:id",le="0.25"} 0\n' in text
    assert 'web_vitals_cls_count{page="/shop/:id"} 1\n' in text
    assert 'web_vitals_beacons_total{nav="navigate"} 1.0\n' in text


def test_every_threshold_is_a_bucket_bound_so_good_shares_are_exact_in_promql(app, registry):
    for name, (good, poor) in monitor.VITALS_THRESHOLDS.items():
        unit = 1 if name == "CLS" else 1000
        histogram = registry.get(
            "web_vitals_cls" if name == "CLS" else f"web_vitals_{name.lower()}_seconds"
        )
        assert good / unit in histogram.buckets
        assert poor / unit in histogram.buckets


def test_apps_on_one_registry_share_its_histograms(registry):
    first, second = monitor.VitalsApp(registry), monitor.VitalsApp(registry)

    first.ingest(beacon(GOOD))
    second.ingest(beacon(GOOD))

    assert first.summary()["/shop/:id"]["LCP"].count == 2


async def test_the_app_works_mounted_in_starlette(registry):
    vitals = monitor.VitalsApp(registry)
    site = Starlette(routes=[Mount("/_redline", app=vitals)])
    transport = httpx.ASGITransport(app=site)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        posted = await client.post("/_redline/vitals", content=beacon(GOOD), headers=dict(TEXT))
        script = await client.get("/_redline/vitals.js")

    assert posted.status_code == 204
    assert script.content == SCRIPT
    assert vitals.summary()["/shop/:id"]["LCP"].count == 1


# -- refusing: a 4xx, a JSON error naming the field, and nothing changed -----------------------

TOO_MANY = [GOOD] * 6
REFUSED = [
    ("invalid JSON", b'{"page": "/", "metrics": [', TEXT, 400, "body"),
    (
        "NaN is not JSON",
        b'{"page": "/", "metrics": [{"name": "LCP", "value": NaN}]}',
        TEXT,
        400,
        "body",
    ),
    ("not an object", b"[1, 2]", TEXT, 400, "body"),
    (
        "form content type",
        beacon(GOOD),
        [(b"content-type", b"multipart/form-data")],
        415,
        "content-type",
    ),
    ("no page", json.dumps({"metrics": [dict(name="LCP", value=1)]}).encode(), TEXT, 400, "page"),
    ("page not a path", beacon(GOOD, page="https://x.test/a"), TEXT, 400, "page"),
    ("page too long", beacon(GOOD, page="/" + "a" * 3000), TEXT, 400, "page"),
    ("nav not a string", beacon(GOOD, nav=3), TEXT, 400, "nav"),
    ("no metrics", beacon(), TEXT, 400, "metrics"),
    ("too many metrics", beacon(*TOO_MANY), TEXT, 400, "metrics"),
    ("metric not an object", beacon(GOOD, "LCP"), TEXT, 400, "metrics[1]"),
    ("unknown name", beacon(GOOD, ("FID", 10)), TEXT, 400, "metrics[1].name"),
    ("value a string", beacon(GOOD, ("FCP", "10")), TEXT, 400, "metrics[1].value"),
    ("value a boolean", beacon(GOOD, ("FCP", True)), TEXT, 400, "metrics[1].value"),
    ("value missing", beacon(GOOD, {"name": "FCP"}), TEXT, 400, "metrics[1].value"),
    ("negative", beacon(GOOD, ("TTFB", -1)), TEXT, 400, "metrics[1].value"),
    ("above 10 minutes", beacon(GOOD, ("INP", 600_001)), TEXT, 400, "metrics[1].value"),
    ("CLS above 100", beacon(GOOD, ("CLS", 100.5)), TEXT, 400, "metrics[1].value"),
    (
        "id not a string",
        beacon(GOOD, {"name": "CLS", "value": 0, "id": 7}),
        TEXT,
        400,
        "metrics[1].id",
    ),
    (
        "id too long",
        beacon(GOOD, {"name": "CLS", "value": 0, "id": "x" * 65}),
        TEXT,
        400,
        "metrics[1].id",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_a_bad_beacon_gets_a_4xx_naming_the_field_and_changes_nothing(
    app, registry, body, headers, status, field
):
    app.ingest(beacon(("LCP", 900.0), page="/before"))
    before = state(app, registry)

    got, response_headers, response = await call(app, body=body, headers=headers)

    assert got == status
    assert response_headers[b"content-type"] == b"application/json"
    error = json.loads(response)
    assert error["field"] == field
    assert error["error"].startswith(f"{field}: ")
    assert state(app, registry) == before


async def test_an_oversized_body_is_refused_from_its_content_length(app, registry):
    before = state(app, registry)
    body = beacon(GOOD, page="/" + "a" * 9000)

    status, _, response = await call(
        app, body=body, headers=[*TEXT, (b"content-length", str(len(body)).encode())]
    )

    assert status == 413
    assert json.loads(response) == {"error": "body: larger than 8192 bytes", "field": "body"}
    assert state(app, registry) == before


async def test_an_oversized_body_without_a_length_is_refused_as_it_streams_in(registry):
    app = monitor.VitalsApp(registry, max_bytes=100)
    body = beacon(GOOD, page="/" + "a" * 200)
    before = state(app, registry)

    status, _, _ = await call(app, chunks=[body[:60], body[60:120], body[120:]], headers=TEXT)

    assert status == 413
    assert state(app, registry) == before


def test_ingest_refuses_an_oversized_body_too(app, registry):
    with pytest.raises(monitor.BeaconError) as refused:
        app.ingest(beacon(GOOD, page="/" + "a" * 9000))

    assert (refused.value.status, refused.value.field) == (413, "body")
    assert isinstance(refused.value, monitor.RedlineMonitorError)


async def test_a_refused_beacon_does_not_take_a_page_slot(registry):
    app = monitor.VitalsApp(registry, max_pages=2)
    app.ingest(beacon(GOOD, page="/a"))

    status, _, _ = await call(app, body=beacon(GOOD, ("FID", 1), page="/b"), headers=TEXT)
    app.ingest(beacon(GOOD, page="/c"))

    assert status == 400
    assert set(app.summary()) == {"/a", "/c"}


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/vitals", 405, b"POST"),
        ("POST", "/vitals.js", 405, b"GET, HEAD"),
        ("POST", "/elsewhere", 404, None),
    ],
)
async def test_other_methods_and_paths_are_refused(app, method, path, status, allow):
    got, headers, body = await call(app, method=method, path=path, body=beacon(GOOD))

    assert got == status
    assert headers.get(b"allow") == allow
    assert json.loads(body)["field"] == ("path" if status == 404 else "method")
    assert app.summary() == {}


# -- the script --------------------------------------------------------------------------------


async def test_the_script_is_served_as_cacheable_javascript(app):
    status, headers, body = await call(app, method="GET", path="/vitals.js")

    assert status == 200
    assert body == SCRIPT
    assert headers[b"content-type"] == b"text/javascript; charset=utf-8"
    assert headers[b"cache-control"] == b"public, max-age=3600"
    assert headers[b"content-length"] == str(len(SCRIPT)).encode()
    assert headers[b"etag"].startswith(b'"')


async def test_a_cached_script_is_revalidated_with_304(app):
    _, headers, _ = await call(app, method="GET", path="/vitals.js")
    etag = headers[b"etag"]

    status, again, body = await call(
        app, method="GET", path="/vitals.js", headers=[(b"if-none-match", b'"old", ' + etag)]
    )

    assert (status, body) == (304, b"")
    assert again[b"etag"] == etag
    assert b"content-length" not in again


async def test_head_of_the_script_sends_its_length_without_a_body(app):
    status, headers, body = await call(app, method="HEAD", path="/vitals.js")

    assert (status, body) == (200, b"")
    assert headers[b"content-length"] == str(len(SCRIPT)).encode()


def test_the_script_is_small_and_reads_its_endpoint_from_its_tag():
    text = SCRIPT.decode()

    assert len(SCRIPT) < 3500
    assert "dataset.endpoint" in text and '"/_redline/vitals"' in text
    assert "navigator.sendBeacon" in text and "keepalive: true" in text


# -- pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/", "/"),
        ("/users/42", "/users/:id"),
        ("/users/42/orders/7", "/users/:id/orders/:id"),
        ("/a/123e4567-E89B-12d3-a456-426614174000/b", "/a/:id/b"),
        ("/blobs/5f2b9c0e8d7a6b4c", "/blobs/:id"),
        ("/search?q=shoes&page=2#results", "/search"),
        ("/docs#intro", "/docs"),
        ("/blog/hello-world", "/blog/hello-world"),
        ("/v2/items", "/v2/items"),
        ("/words/decadefacade", "/words/decadefacade"),
        ("/abcdefabcdefabcdef", "/abcdefabcdefabcdef"),
    ],
)
def test_page_paths_lose_queries_fragments_and_ids(path, label):
    assert monitor.normalise_page(path) == label


def test_page_labels_are_cut_to_128_characters(app):
    recorded = app.ingest(beacon(GOOD, page="/" + "p" * 300))

    assert recorded.page == "/" + "p" * 127


def test_pages_past_the_bound_count_as_other(registry):
    app = monitor.VitalsApp(registry, max_pages=2)

    labels = [app.ingest(beacon(GOOD, page=p)).page for p in ("/a", "/b", "/c", "/a", "/d")]

    assert labels == ["/a", "/b", "other", "/a", "other"]
    assert app.summary()["other"]["LCP"].count == 2


def test_a_custom_page_normaliser_replaces_the_default(registry):
    app = monitor.VitalsApp(registry, pages=lambda path: path.split("/")[1] or "home")

    assert app.ingest(beacon(GOOD, page="/shop/42")).page == "shop"
    assert app.ingest(beacon(GOOD, page="/")).page == "home"


# -- p75 and ratings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "rating"),
    [
        ("LCP", 2500, "good"),
        ("LCP", 2500.001, "needs-improvement"),
        ("LCP", 4000, "needs-improvement"),
        ("LCP", 4000.001, "poor"),
        ("INP", 200, "good"),
        ("INP", 201, "needs-improvement"),
        ("INP", 500, "needs-improvement"),
        ("INP", 501, "poor"),
        ("CLS", 0.1, "good"),
        ("CLS", 0.1001, "needs-improvement"),
        ("CLS", 0.25, "needs-improvement"),
        ("CLS", 0.2501, "poor"),
        ("FCP", 1800, "good"),
        ("FCP", 3000, "needs-improvement"),
        ("FCP", 3000.5, "poor"),
        ("TTFB", 800, "good"),
        ("TTFB", 800.5, "needs-improvement"),
        ("TTFB", 1800, "needs-improvement"),
        ("TTFB", 1800.5, "poor"),
        ("TTFB", 0, "good"),
    ],
)
def test_a_value_is_good_up_to_the_first_threshold_and_poor_past_the_second(name, value, rating):
    assert monitor.vital_rating(name, value) == rating


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("which", "nudge", "rating"),
    [
        (0, 1.0, "good"),
        (0, 1.001, "needs-improvement"),
        (1, 1.0, "needs-improvement"),
        (1, 1.001, "poor"),
    ],
)
def test_a_p75_exactly_at_a_threshold_is_rated_and_reported_on_the_right_side(
    app, name, which, nudge, rating
):
    threshold = monitor.VITALS_THRESHOLDS[name][which]
    p75 = threshold * nudge
    # Three of four page views at the p75, one far better: the p75 is the third value.
    for value in (threshold / 10, p75, p75, p75):
        app.ingest(beacon((name, value)))

    summary = app.summary()["/shop/:id"][name]

    assert summary.rating == rating
    assert summary.count == 4
    # Within the HDR histogram's 1 %, and never across the threshold the rating is about.
    assert summary.p75 == pytest.approx(p75, rel=0.01)
    if nudge == 1.0:
        assert summary.p75 <= threshold
    else:
        assert summary.p75 > threshold


@pytest.mark.parametrize("seed", range(30))
def test_p75_is_within_1_percent_of_exact_and_rated_as_the_exact_p75(registry, seed):
    app = monitor.VitalsApp(registry)
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    lcp = [rng.choice([2500.0, 4000.0, rng.uniform(500, 6000)]) for _ in range(n)]
    cls = [rng.choice([0.1, 0.25, rng.uniform(0, 0.5)]) for _ in range(n)]
    for a, b in zip(lcp, cls, strict=True):
        app.ingest(beacon(("LCP", a), ("CLS", b)))

    summary = app.summary()["/shop/:id"]

    for name, values in (("LCP", lcp), ("CLS", cls)):
        # The HDR histogram's rank for p75: the nearest rank, rounding half up.
        exact = sorted(values)[max(int(0.75 * n + 0.5), 1) - 1]
        assert summary[name].count == n
        assert summary[name].p75 == pytest.approx(exact, rel=0.01, abs=1e-4)
        assert summary[name].rating == monitor.vital_rating(name, exact)


def test_summary_leaves_out_pages_and_metrics_without_data(app):
    app.ingest(beacon(("FCP", 100), page="/a"))
    app.ingest(beacon(("INP", 100), page="/b"))

    assert {page: set(metrics) for page, metrics in app.summary().items()} == {
        "/a": {"FCP"},
        "/b": {"INP"},
    }


def test_summary_of_a_snapshot_directory_covers_every_worker(tmp_path, registry):
    mine = monitor.VitalsApp(registry)
    other_registry = monitor.Registry()
    other = monitor.VitalsApp(other_registry)
    mine.ingest(beacon(("LCP", 1000)))
    for _ in range(3):
        other.ingest(beacon(("LCP", 5000)))
    monitor.SnapshotDirectory(tmp_path, registry=other_registry).write()

    merged = mine.summary(monitor.SnapshotDirectory(tmp_path, registry=registry))

    assert merged["/shop/:id"]["LCP"] == monitor.VitalSummary(
        p75=pytest.approx(5000, rel=0.01), count=4, rating="poor"
    )
    assert mine.summary()["/shop/:id"]["LCP"].count == 1


def test_limits_below_one_are_refused(registry):
    with pytest.raises(ValueError, match="max_pages"):
        monitor.VitalsApp(registry, max_pages=0)


# -- a real browser ----------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="/_redline/vitals.js" data-endpoint="/_redline/vitals" defer></script>
</head><body style="margin:0;font:16px sans-serif">
<h1>{title}</h1>
<button id="buy" style="width:200px;height:60px">Buy</button>
<p id="text">{text}</p>
<script>
window.state = {{ready: false, clickTimed: false}};
// The test waits for the click's event-timing entry: then the beacon can see it too.
new PerformanceObserver((list) => {{
  const buy = document.getElementById("buy");
  if (list.getEntries().some((e) => e.name === "click" && e.target === buy)) {{
    state.clickTimed = true;
  }}
}}).observe({{type: "event", durationThreshold: 16}});
document.getElementById("buy").addEventListener("click", () => {{
  const end = performance.now() + 150;  // a slow handler: INP >= 150 ms
  while (performance.now() < end) {{}}
}});
addEventListener("load", () => setTimeout(() => {{
  if ({shift}) {{
    const banner = document.createElement("div");
    banner.style.height = "200px";
    banner.textContent = "A late banner pushes everything down";
    document.body.prepend(banner);
  }}
  requestAnimationFrame(() => requestAnimationFrame(() => {{ state.ready = true; }}));
}}, 200));
</script></body></html>"""


def shop(request):
    text = "An item worth buying. " * 40
    return HTMLResponse(PAGE.format(title="Shop", text=text, shift="true"))


def article(request):
    text = "A long read. " * 60
    return HTMLResponse(PAGE.format(title="Article", text=text, shift="false"))


class Recorder:
    """Notes every request the vitals app gets: method, path, content type and status."""

    def __init__(self, app):
        self.app = app
        self.requests = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])

        async def noting(message):
            if message["type"] == "http.response.start":
                self.requests.append(
                    (
                        scope["method"],
                        scope["path"],
                        headers.get(b"content-type", b"").decode(),
                        message["status"],
                    )
                )
            await send(message)

        await self.app(scope, receive, noting)


def wait_until(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


@contextmanager
def site_with_vitals():
    """A real uvicorn serving the shop and article pages and the vitals app (behind a
    Recorder); yields (base URL, VitalsApp, Recorder, registry)."""
    chromium()
    registry = monitor.Registry()
    vitals = monitor.VitalsApp(registry)
    recorder = Recorder(vitals)
    site = Starlette(
        routes=[
            Route("/shop/{id}", shop),
            Route("/articles/{id}", article),
            Mount("/_redline", app=recorder),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(site, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}", vitals, recorder, registry
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def click_buy(browser):
    x, y = browser.evaluate(
        "(() => { const r = document.getElementById('buy').getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    browser.click(x, y)
    wait_until(lambda: browser.evaluate("state.clickTimed"), "the click's timing entry")


@pytest.fixture(scope="module")
def browser_run():
    """Chromium visits a shop page (a layout shift, then a slow click), then an article page
    (no input, no shift), then about:blank; each page's beacon goes to a real uvicorn."""
    with site_with_vitals() as (base, vitals, recorder, registry):
        started = time.perf_counter()
        with devtools() as browser:
            browser.navigate(f"{base}/shop/123?ref=mail#top")
            wait_until(lambda: browser.evaluate("state.ready"), "the shop page to settle")
            click_buy(browser)
            browser.navigate(f"{base}/articles/7")
            wait_until(lambda: browser.evaluate("state.ready"), "the article page to settle")
            browser.navigate("about:blank")
            posts = lambda: [r for r in recorder.requests if r[0] == "POST"]  # noqa: E731
            wait_until(lambda: len(posts()) >= 2, "two beacons")
        seconds = time.perf_counter() - started
        yield {
            "summary": vitals.summary(),
            "requests": list(recorder.requests),
            "exposition": monitor.generate_latest(registry).decode(),
            "seconds": seconds,
        }


def test_chromium_sends_once_at_the_first_hide_not_again_after_the_tab_returns():
    with site_with_vitals() as (base, vitals, recorder, _), devtools() as browser:
        browser.navigate(f"{base}/shop/5")
        wait_until(lambda: browser.evaluate("state.ready"), "the shop page to settle")
        posts = lambda: [r for r in recorder.requests if r[0] == "POST"]  # noqa: E731
        # Another tab in front hides this one for real; bringing it back shows it again.
        browser.send("Target.createTarget", url="about:blank")
        wait_until(lambda: browser.evaluate("document.visibilityState") == "hidden", "a hide")
        wait_until(lambda: len(posts()) == 1, "the beacon of the first hide")
        browser.send("Page.bringToFront")
        wait_until(lambda: browser.evaluate("document.visibilityState") == "visible", "a show")
        click_buy(browser)  # a slow interaction after the page view ended
        browser.navigate("about:blank")  # hidden again, then unloaded
        time.sleep(1.5)  # time for a second beacon to arrive, if one were sent

        assert len(posts()) == 1
        shop = vitals.summary()["/shop/:id"]
        assert "INP" not in shop
        assert all(summary.count == 1 for summary in shop.values())


def test_chromium_reports_lcp_fcp_ttfb_cls_and_inp_after_a_click(browser_run):
    shop = browser_run["summary"]["/shop/:id"]

    assert set(shop) == set(NAMES)
    assert all(shop[name].count == 1 for name in NAMES)
    assert 150 <= shop["INP"].p75 < 2000
    assert shop["CLS"].p75 > 0
    assert 0 < shop["TTFB"].p75 <= shop["FCP"].p75 <= shop["LCP"].p75 < 10_000
    assert browser_run["seconds"] < 30


def test_chromium_reports_no_inp_without_interaction_and_a_cls_of_0_without_shifts(
    browser_run,
):
    article = browser_run["summary"]["/articles/:id"]

    assert set(article) == {"LCP", "FCP", "TTFB", "CLS"}
    assert article["CLS"].p75 == 0
    assert article["CLS"].rating == "good"


def test_chromium_sends_one_text_plain_beacon_per_page_view(browser_run):
    posts = [r for r in browser_run["requests"] if r[0] == "POST"]
    scripts = [r for r in browser_run["requests"] if r[0] == "GET"]

    assert posts == [("POST", "/_redline/vitals", "text/plain;charset=UTF-8", 204)] * 2
    assert scripts and all(r[1:] == ("/_redline/vitals.js", "", 200) for r in scripts)


def test_chromium_beacons_show_in_the_metrics_exposition(browser_run):
    text = browser_run["exposition"]

    assert 'web_vitals_inp_seconds_count{page="/shop/:id"} 1\n' in text
    assert 'web_vitals_lcp_seconds_count{page="/articles/:id"} 1\n' in text
    assert 'web_vitals_beacons_total{nav="navigate"} 2.0\n' in text
