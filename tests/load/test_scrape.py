"""Server metrics scraped during a run, against real HTTP endpoints."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from redline.load._scrape import Scraper, slope
from redline.load._thresholds import _LABELS, evaluate_all

if TYPE_CHECKING:
    from conftest import HTTPTestServer

SECOND = 1_000_000_000


@dataclass
class Exporter:
    registry: CollectorRegistry
    url: str


def _exporter(**tls: str) -> Iterator[Exporter]:
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry, **tls)
    scheme = "https" if tls else "http"
    yield Exporter(registry, f"{scheme}://127.0.0.1:{server.server_port}/metrics")
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    """prometheus_client's own HTTP server, in a thread, exposing a fresh registry."""
    yield from _exporter()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the scraper never got there"
        await asyncio.sleep(0.005)


def last(scraper: Scraper, key: str) -> float | None:
    series = scraper.summary().get(key)
    return None if series is None else series["last"]


def distinct(series: dict[str, Any]) -> list[float]:
    """The values in order, without the repeats of scrapes that saw no change."""
    out: list[float] = []
    for _, value in series["values"]:
        if not out or out[-1] != value:
            out.append(value)
    return out


async def scrape_twice(url: str, **options: Any) -> Scraper:
    """The first scrape of ``start`` and the last of ``stop``."""
    scraper = Scraper(url, interval=60, **options)
    scraper.start()
    await until(lambda: scraper.status()["scrapes"] == 1)
    await scraper.stop()
    assert scraper.status()["scrapes"] == 2
    return scraper


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_series_follow_what_a_live_exporter_is_set_to_during_the_run(exporter: Exporter):
    depth = Gauge("queue_depth", "Jobs waiting.", registry=exporter.registry)
    requests = Counter("requests", "Requests served.", ["path"], registry=exporter.registry)
    depth.set(3)
    requests.labels("/a").inc(2)
    scraper = Scraper(exporter.url, interval=0.02, start_ns=time.perf_counter_ns() - 10 * SECOND)
    scraper.start()
    await until(lambda: last(scraper, "queue_depth") == 3)
    depth.set(7)
    requests.labels("/a").inc(5)
    await until(lambda: last(scraper, 'requests_total{path="/a"}') == 7)
    depth.set(5)
    await scraper.stop()

    server = scraper.summary()
    gauge = server["queue_depth"]
    assert distinct(gauge) == [3, 7, 5]
    assert (gauge["last"], gauge["min"], gauge["max"]) == (5, 3, 7)
    assert gauge["avg"] == pytest.approx(sum(v for _, v in gauge["values"]) / len(gauge["values"]))
    assert "rate" not in gauge
    times = [t for t, _ in gauge["values"]]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert 10 <= times[0] < times[-1] < 20  # seconds since start_ns, ten seconds back

    counter = server['requests_total{path="/a"}']
    assert distinct(counter) == [2, 7]  # raw values, not increments
    elapsed = counter["values"][-1][0] - counter["values"][0][0]
    assert counter["rate"] == pytest.approx(5 / elapsed)
    status = scraper.status()
    assert status["errors"] == 0 and status["last_error"] is None
    assert status["scrapes"] == len(gauge["values"]) >= 3
    assert status["url"] == exporter.url


async def test_keys_sort_labels_and_escape_values_as_the_thresholds_read_them(
    http_server: HTTPTestServer,
):
    http_server.body = (
        b'# TYPE hits_total counter\nhits_total{tier="l1",path="/a\\"b\\\\c\\nd"} 4\nplain 1\n'
    )
    scraper = await scrape_twice(http_server.url + "/metrics")
    key = 'hits_total{path="/a\\"b\\\\c\\nd",tier="l1"}'
    assert list(scraper.summary()) == [key, "plain"]
    assert dict(_LABELS.findall(key)) == {"path": '/a\\"b\\\\c\\nd', "tier": "l1"}
    verdicts = evaluate_all(["hits_total{tier:l1}: last == 4"], {"server": scraper.summary()})
    assert verdicts["hits_total{tier:l1}: last == 4"] == {"ok": True, "value": 4.0}


async def test_counter_rate_is_the_increase_per_second_counting_a_reset_from_zero(
    http_server: HTTPTestServer,
):
    scraper = Scraper(http_server.url + "/metrics", interval=0.02)
    for step, value in enumerate((10, 20, 5, 15)):
        http_server.body = b"jobs_total %d\nworkers %d\n" % (value, value)
        if step == 0:
            scraper.start()
        await until(lambda value=value: last(scraper, "jobs_total") == value)
    await scraper.stop()

    counter, gauge = scraper.summary()["jobs_total"], scraper.summary()["workers"]
    assert distinct(counter) == [10, 20, 5, 15]
    elapsed = counter["values"][-1][0] - counter["values"][0][0]
    # +10, then a restart to 5 (all of it new), then +10.
    assert counter["rate"] == pytest.approx(25 / elapsed)
    assert "rate" not in gauge


async def test_histogram_buckets_and_nan_quantiles_are_left_out_count_and_sum_are_counters(
    http_server: HTTPTestServer,
):
    http_server.body = b"""\
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_count 2
latency_seconds_sum 0.3
# TYPE size summary
size{quantile="0.5"} 120
size{quantile="0.99"} NaN
size_count 2
size_sum 240
"""
    server = (await scrape_twice(http_server.url + "/metrics")).summary()
    assert set(server) == {
        "latency_seconds_count",
        "latency_seconds_sum",
        'size{quantile="0.5"}',
        "size_count",
        "size_sum",
    }
    assert server["latency_seconds_count"]["rate"] == 0.0
    assert server["size_sum"]["rate"] == 0.0
    assert "rate" not in server['size{quantile="0.5"}']
    assert server['size{quantile="0.5"}']["last"] == 120

    with_buckets = await scrape_twice(http_server.url + "/metrics", buckets=True)
    assert with_buckets.summary()['latency_seconds_bucket{le="+Inf"}']["last"] == 2


async def test_a_refused_connection_is_counted_and_scraping_goes_on():
    url = f"http://127.0.0.1:{closed_port()}/metrics"
    scraper = Scraper(url, interval=0.02)
    scraper.start()
    await until(lambda: scraper.status()["errors"] >= 2)
    await scraper.stop()
    status = scraper.status()
    assert status["errors"] == status["scrapes"] >= 3
    assert status["last_error"].startswith(f"could not connect to {url}")
    assert scraper.summary() == {}


async def test_a_server_that_never_answers_times_out_and_stop_returns_promptly(
    http_server: HTTPTestServer,
):
    url = http_server.url + "/hang"
    scraper = Scraper(url, interval=0.02, timeout=0.1)
    scraper.start()
    await until(lambda: scraper.status()["errors"] >= 2)
    assert scraper.status()["last_error"] == f"{url}: no response within 0.1 s"
    await scraper.stop()
    assert scraper.status()["errors"] == scraper.status()["scrapes"]


async def test_stop_abandons_a_scrape_in_flight_and_takes_only_the_last_one(
    http_server: HTTPTestServer,
):
    scraper = Scraper(http_server.url + "/hang", timeout=0.5)
    scraper.start()
    await until(lambda: http_server.requests == 1)
    began = time.perf_counter()
    await scraper.stop()
    # The final scrape's 0.5 s, not also what was left of the first one's.
    assert time.perf_counter() - began < 0.8
    assert scraper.status()["scrapes"] == scraper.status()["errors"] == 1
    assert http_server.requests == 2


async def test_a_status_other_than_200_is_a_failed_scrape(http_server: HTTPTestServer):
    url = http_server.url + "/status/500"
    http_server.body = b"up 1\n"
    scraper = await scrape_twice(url)
    assert scraper.status()["errors"] == 2
    assert scraper.status()["last_error"] == f"{url}: HTTP 500, expected 200"
    assert scraper.summary() == {}


async def test_text_that_is_not_prometheus_fails_the_scrape_until_it_is(
    http_server: HTTPTestServer,
):
    url = http_server.url + "/metrics"
    http_server.body = b"<html><body>Not here</body></html>"
    scraper = Scraper(url, interval=0.02)
    scraper.start()
    await until(lambda: scraper.status()["errors"] >= 1)
    assert scraper.status()["last_error"].startswith(f"{url}: not Prometheus text: ")
    http_server.body = b"up 1\n"
    await until(lambda: last(scraper, "up") == 1)
    await scraper.stop()
    assert list(scraper.summary()) == ["up"]
    assert scraper.status()["scrapes"] > scraper.status()["errors"] >= 1


@pytest.mark.parametrize("route", ["/metrics", "/until-close"], ids=["sized", "close-delimited"])
async def test_a_response_over_max_bytes_is_cut_off_and_fails_the_scrape(
    http_server: HTTPTestServer, route: str
):
    url = http_server.url + route
    http_server.body = b"".join(b"gauge_%d 1\n" % i for i in range(200))
    assert len(http_server.body) > 2000
    big = await scrape_twice(url, max_bytes=1000)
    assert big.status()["errors"] == 2
    assert big.status()["last_error"] == f"{url}: response larger than max_bytes (1000 bytes)"
    assert big.summary() == {}

    http_server.body = b"gauge_0 1\n"
    small = await scrape_twice(url, max_bytes=1000)
    assert small.status()["errors"] == 0
    assert list(small.summary()) == ["gauge_0"]


async def test_series_beyond_max_series_are_dropped_and_counted(http_server: HTTPTestServer):
    url = http_server.url + "/metrics"
    http_server.body = b"a 1\nb 2\nc 3\nd 4\ne 5\n"
    scraper = Scraper(url, interval=0.02, max_series=3)
    scraper.start()
    await until(lambda: scraper.status()["scrapes"] >= 1)
    # The series kept are the first ones seen, also once others come and go.
    http_server.body = b"f 6\nb 7\nc 8\n"
    await until(lambda: last(scraper, "b") == 7)
    await scraper.stop()
    assert list(scraper.summary()) == ["a", "b", "c"]
    assert scraper.status()["series"] == 3
    assert scraper.status()["dropped_series"] == 2
    assert scraper.status()["errors"] == 0


async def test_thresholds_judge_the_scraped_series(exporter: Exporter):
    gauge = Gauge("my_gauge", "A gauge.", registry=exporter.registry)
    requests = Counter("requests", "Requests.", ["path"], registry=exporter.registry)
    gauge.set(7)
    requests.labels("/a").inc(3)
    requests.labels("/b").inc(1)
    scraper = await scrape_twice(exporter.url)
    summary = {
        "requests": {"total": 10, "failed": 0},
        "rps": 5.0,
        "server": scraper.summary(),
        "server_scrape": scraper.status(),
    }
    verdicts = evaluate_all(
        [
            "my_gauge: last > 5",
            'requests_total{path:"/a"}: max >= 3',
            'requests_total{path:"/b"}: max >= 3',
            "my_gauge: min > 100",
            "requests_total: max > 0",  # two series match: ambiguous, so no value
            "not_exported: last > 0",
        ],
        summary,
    )
    assert [(v["ok"], v["value"]) for v in verdicts.values()] == [
        (True, 7.0),
        (True, 3.0),
        (False, 1.0),
        (False, 7.0),
        (False, None),
        (False, None),
    ]


async def test_the_query_string_of_the_url_is_sent(exporter: Exporter):
    Gauge("wanted", "Kept.", registry=exporter.registry).set(1)
    Gauge("unwanted", "Filtered out.", registry=exporter.registry).set(2)
    scraper = await scrape_twice(exporter.url + "?name[]=wanted")
    assert list(scraper.summary()) == ["wanted"]


async def test_https_endpoints_are_scraped_and_verified_unless_told_not_to(
    self_signed_cert: tuple[Path, Path],
):
    cert, key = self_signed_cert
    for server in _exporter(certfile=str(cert), keyfile=str(key)):
        Gauge("secure", "Over TLS.", registry=server.registry).set(9)
        trusting = await scrape_twice(server.url, verify=False)
        assert trusting.summary()["secure"]["last"] == 9
        verifying = await scrape_twice(server.url)
        assert verifying.status()["errors"] == 2
        assert "CERTIFICATE_VERIFY_FAILED" in verifying.status()["last_error"]


async def test_start_twice_is_an_error_and_stop_without_start_does_nothing(
    http_server: HTTPTestServer,
):
    scraper = Scraper(http_server.url)
    await scraper.stop()
    assert scraper.status()["scrapes"] == 0
    scraper.start()
    with pytest.raises(RuntimeError, match="already running"):
        scraper.start()
    await scraper.stop()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://host/metrics", {}, "invalid target URL"),
        ("http://127.0.0.1:9100/metrics", {"interval": 0}, "must be positive"),
        ("http://127.0.0.1:9100/metrics", {"max_series": 0}, "at least 1"),
    ],
)
def test_bad_settings_fail_before_the_run(url, options, message):
    with pytest.raises(ValueError, match=message):
        Scraper(url, **options)


def test_slope_is_the_least_squares_rate_of_change_per_second():
    assert slope([[0, 10], [1, 12], [2, 14], [3, 16]]) == pytest.approx(2.0)
    # Noise around a line that grows 1 MB a second.
    assert slope([[0, 100e6], [1, 101.5e6], [2, 101.5e6], [3, 103e6]]) == pytest.approx(0.9e6)
    assert math.isnan(slope([[0, 1]]))
    assert math.isnan(slope([]))
    assert math.isnan(slope([[5, 1], [5, 2]]))
