"""k6-style thresholds: pass/fail rules evaluated against a run's ``summary.json``.

Grammar (whitespace is free between tokens)::

    threshold   := metric [ "{" tag ("," tag)* "}" ] [ ":" aggregation ] op number [unit] ["!"]
    metric      := builtin | ["server."] series
    builtin     := "latency" | "service_time" | "errors" | "checks" | "requests" | "rps"
                 | "dropped" | "late"
    series      := [a-zA-Z_:][a-zA-Z0-9_:]*      a Prometheus name, ":" included
    tag         := key ":" value              value is bare (up to "," or "}") or quoted
    aggregation := "p(" N ")" | "avg" | "min" | "max" | "med" | "rate" | "count" | "last"
    op          := "<" | "<=" | ">" | ">=" | "==" | "!="
    unit        := "ms" | "s" | "us" (latency metrics) | "%" (ratios: errors, checks, dropped, late)

Metrics and what each aggregation reads (latencies are in milliseconds):

- ``latency``, ``service_time``: ``p(N)``, ``avg``, ``min``, ``max``, ``med``; ``count`` is the
  number of requests. No default: ``latency < 200`` is an error, write ``latency: p(95) < 200``.
- ``errors``: ``rate`` (default) failed/total, ``count`` failed requests.
- ``checks``: ``rate`` (default) failed checks/total requests (0 without requests), ``count``
  failed checks (``requests.checks_failed``).
- ``requests``: ``count`` (default) total, ``rate`` requests per second.
- ``rps``: the run's requests per second (``rate``/``avg`` are accepted and mean the same).
- ``dropped``, ``late``: ``count`` (default) open-model arrivals never sent / sent late;
  ``rate`` is that count over the arrivals scheduled (``requests.scheduled`` when the summary
  has it, else requests completed plus dropped).
- Any other name, and any name after ``server.``, is a server series scraped with
  ``--metrics-url`` (``summary["server"]``): ``last`` (default), ``avg``, ``min``, ``max``,
  ``med``, ``p(N)``, ``count`` over its samples, and ``rate``, the per-second increase the
  scraper computes for counters (no value, so a failure, on other series); tags select
  Prometheus labels. ``server.`` names a series that shares a built-in's name
  (``server.requests: last > 0``).

A ``:`` in a series name belongs to the name (``app:mem_bytes: max < 1e9``), except that a
name written without spaces ending in ``:`` and an aggregation reads as name and aggregation,
as ``errors:rate < 0.01`` and ``mem_bytes:max < 5e8`` always have. To name a series that
itself ends so (a recording rule ``job:mem:max``), write the aggregation after it:
``job:mem:max: last < 5e8``.

The tag ``name:`` selects one request name (``latency{name:list-calls}: p(95) < 200`` reads
``endpoints["list-calls"]``); it is the only tag built-in metrics know, but for ``dropped``
and ``late``, which are counted per scenario and take ``scenario:`` instead
(``dropped{scenario:checkout}: count == 0`` reads ``scenarios["checkout"]``).

Abort on fail: end the threshold with ``!`` (``errors: rate < 0.05 !``), or use the dict form
``{"threshold": "errors: rate < 0.05", "abort_on_fail": true, "delay_abort_eval": "1m30s"}``
(k6's ``abortOnFail``/``delayAbortEval`` spellings are accepted too; the delay is seconds, or
a duration of ``h``, ``m``, ``s`` and ``ms`` parts). The engine checks such thresholds during
the run, after the delay, and stops the run when one fails.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from statistics import mean, median
from typing import Any

from redline.load._errors import RedlineLoadError
from redline.load._metrics import percentile_key

_LATENCY = {"latency", "service_time"}
# Metrics whose rate is a share of something, so that a percentage makes sense.
_RATIOS = {"errors", "checks", "dropped", "late"}
_AGGREGATIONS: dict[str, tuple[set[str], str | None]] = {
    "latency": ({"p", "avg", "min", "max", "med", "count"}, None),
    "service_time": ({"p", "avg", "min", "max", "med", "count"}, None),
    "errors": ({"rate", "count"}, "rate"),
    "checks": ({"rate", "count"}, "rate"),
    "requests": ({"rate", "count"}, "count"),
    "rps": ({"rate", "avg"}, "rate"),
    "dropped": ({"rate", "count"}, "count"),
    "late": ({"rate", "count"}, "count"),
}
_BUILTIN = set(_AGGREGATIONS)
_TAGS = {"dropped": ("scenario",), "late": ("scenario",)}
_SERVER_AGGREGATIONS = ({"p", "avg", "min", "max", "med", "count", "last", "rate"}, "last")
# The aggregations a series name written without spaces may end with (``mem_bytes:max``).
_AGGREGATION_WORDS = _SERVER_AGGREGATIONS[0] - {"p"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_UNITS_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SERIES = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SERVER_PREFIX = "server."
_AGGREGATION = re.compile(r"p\s*\(\s*(?P<n>[0-9]*\.?[0-9]+)\s*\)|(?P<word>[A-Za-z_]\w*)")
_OP = re.compile(r"<=|>=|==|!=|<|>")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_UNIT = re.compile(r"ms|µs|us|s|%")
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_BARE_VALUE = re.compile(r"[^,}]+")
_SECONDS = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*")
_DURATION = re.compile(r"\s*(?:[0-9]*\.?[0-9]+\s*(?:ms|s|m|h)\s*)+")
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)\s*(ms|s|m|h)")
_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LABELS = re.compile(r"(\w+)=\"((?:[^\"\\]|\\.)*)\"")


class ThresholdError(RedlineLoadError, ValueError):
    """A threshold expression is malformed; names the expression and the column."""

    def __init__(self, message: str, expression: str, column: int | None = None) -> None:
        self.message = message
        self.expression = expression
        self.column = column
        where = f"column {column} of " if column is not None else ""
        super().__init__(f"{message} ({where}threshold {expression!r})")


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold; ``evaluate`` reads its value from a summary.

    ``server`` is true when ``metric`` names a scraped series, as any name but the built-ins
    does, and a built-in's name does after ``server.``.
    """

    expression: str
    metric: str
    aggregation: str
    op: str
    target: float
    tags: tuple[tuple[str, str], ...] = ()
    percentile: float | None = None
    abort_on_fail: bool = False
    delay_abort_eval: float = 0.0
    server: bool = False
    _compare: Callable[[float, float], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compare", _OPS[self.op])

    def evaluate(self, summary: Mapping[str, Any]) -> tuple[bool, float]:
        """``(ok, value)``; a value the summary does not have is NaN and fails."""
        value = self._value(summary)
        return (not math.isnan(value) and self._compare(value, self.target)), value

    def _value(self, summary: Mapping[str, Any]) -> float:
        if self.server or self.metric not in _BUILTIN:
            return _server_value(summary.get("server") or {}, self)
        tags = dict(self.tags)
        if "scenario" in tags:
            return self._scenario_value(summary, tags["scenario"])
        if "name" in tags:
            summary = (summary.get("endpoints") or {}).get(tags["name"])
            if summary is None:
                return math.nan
        requests = summary.get("requests", {})
        total = requests.get("total", 0)
        agg = self.aggregation
        if self.metric in _LATENCY:
            if agg == "count":
                return float(total)
            key = {"med": "p50"}.get(agg, agg)
            if self.percentile is not None:
                key = percentile_key(self.percentile)
            return float(summary.get(f"{self.metric}_ms", {}).get(key, math.nan))
        if self.metric in ("rps", "requests") and agg in ("rate", "avg"):
            return float(summary.get("rps", math.nan))
        if self.metric == "requests":
            return float(total)
        key = {"errors": "failed", "checks": "checks_failed"}.get(self.metric, self.metric)
        counted = requests.get(key, 0)
        if agg == "count":
            return float(counted)
        if self.metric in ("errors", "checks"):
            return counted / total if total else 0.0
        # Arrivals, not requests: a flow of several requests sends several per arrival, and
        # only the runner knows how many it scheduled. Older summaries lack the count.
        scheduled = requests.get("scheduled") or 0
        if scheduled <= 0:
            scheduled = total + requests.get("dropped", 0)
        return counted / scheduled if scheduled else 0.0

    def _scenario_value(self, summary: Mapping[str, Any], name: str) -> float:
        section = (summary.get("scenarios") or {}).get(name)
        if section is None or self.metric not in section:
            return math.nan
        counted = section[self.metric]
        if self.aggregation == "count":
            return float(counted)
        scheduled = section.get("scheduled")
        if scheduled is None:
            return math.nan
        return counted / scheduled if scheduled > 0 else 0.0


def parse(expression: str | Mapping[str, Any]) -> Threshold:
    """Parse one threshold, as a string or the dict form with ``abort_on_fail``."""
    if isinstance(expression, Mapping):
        return _parse_mapping(expression)
    return _Parser(expression).parse()


def evaluate_all(
    expressions: Iterable[str | Mapping[str, Any] | Threshold], summary: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``{expression: {"ok": bool, "value": float | None}}`` (None when the value is missing)."""
    results = {}
    for item in expressions:
        threshold = item if isinstance(item, Threshold) else parse(item)
        ok, value = threshold.evaluate(summary)
        results[threshold.expression] = {"ok": ok, "value": None if math.isnan(value) else value}
    return results


def required_percentiles(thresholds: Iterable[Threshold]) -> tuple[float, ...]:
    """Percentiles the thresholds read, for ``Recorder.summary(extra=...)``."""
    return tuple(dict.fromkeys(t.percentile for t in thresholds if t.percentile is not None))


def aborting(
    thresholds: Iterable[Threshold], summary: Mapping[str, Any], elapsed_s: float
) -> list[Threshold]:
    """The abort-on-fail thresholds that fail now, past their ``delay_abort_eval``."""
    return [
        t
        for t in thresholds
        if t.abort_on_fail and elapsed_s >= t.delay_abort_eval and not t.evaluate(summary)[0]
    ]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> ThresholdError:
        return ThresholdError(message, self.text, (self.pos if pos is None else pos) + 1)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        self.skip()
        found = pattern.match(self.text, self.pos)
        if found:
            self.pos = found.end()
        return found

    def take(self, char: str) -> bool:
        self.skip()
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            return True
        return False

    def parse(self) -> Threshold:
        self.skip()
        server = self.text.startswith(_SERVER_PREFIX, self.pos)
        if server:
            self.pos += len(_SERVER_PREFIX)
        metric = self.metric_name(server)
        server = server or metric not in _BUILTIN
        allowed, default = _SERVER_AGGREGATIONS if server else _AGGREGATIONS[metric]
        tags = self.tags(None if server else metric) if self.take("{") else ()
        aggregation, percentile = default, None
        if self.take(":"):
            aggregation, percentile = self.aggregation(metric, allowed)
        elif default is None:
            self.skip()
            raise self.fail(f"{metric} needs an aggregation, e.g. '{metric}: p(95) < 200'")
        op = self.match(_OP)
        if not op:
            raise self.fail("expected a comparison: <, <=, >, >=, == or !=")
        number = self.match(_NUMBER)
        if not number:
            raise self.fail("expected a number")
        target = self.unit(float(number.group()), None if server else metric, aggregation)
        abort = self.take("!")
        self.skip()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos :]!r} after the threshold")
        return Threshold(
            expression=self.text,
            metric=metric,
            aggregation=aggregation,
            op=op.group(),
            target=target,
            tags=tags,
            percentile=percentile,
            abort_on_fail=abort,
            server=server,
        )

    def metric_name(self, server: bool) -> str:
        """The metric's name, leaving ``pos`` on what follows it (``{``, ``:`` or the op)."""
        start = self.pos
        found = _SERIES.match(self.text, start)
        if not found or found.group() == ":":
            if server:
                raise self.fail("expected a series name after 'server.'")
            raise self.fail("expected a metric name such as latency, errors or rps")
        name = found.group()
        after = self.text[found.end() :].lstrip()
        head, colon, last = name.rpartition(":")
        if name.endswith(":"):
            name = name[:-1]  # the colon before the aggregation
        elif (
            colon
            and head
            and not after.startswith((":", "{"))
            and (last in _AGGREGATION_WORDS or (last == "p" and after.startswith("(")))
        ):
            name = head  # "errors:rate", "mem_bytes:max": the old, spaceless form
        self.pos = start + len(name)
        return name

    def tags(self, metric: str | None) -> tuple[tuple[str, str], ...]:
        """The tag list; ``metric`` is the built-in it filters, None for a series."""
        tags = []
        known = _TAGS.get(metric, ("name",)) if metric is not None else None
        while True:
            key = self.match(_NAME)
            if not key:
                raise self.fail("expected a tag name, e.g. {name:list-calls}")
            if known is not None and key.group() not in known:
                allowed = " or ".join(f"{tag}:" for tag in known)
                raise self.fail(
                    f"unknown tag {key.group()!r}; {metric} can only be filtered by {allowed}",
                    key.start(),
                )
            if not self.take(":"):
                raise self.fail(f"expected ':' after tag {key.group()!r}")
            quoted = self.match(_QUOTED)
            if quoted:
                text = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
            else:
                bare = self.match(_BARE_VALUE)
                text = bare.group() if bare else ""
            if not text.strip():
                raise self.fail(f"tag {key.group()!r} has no value")
            tags.append((key.group(), text.strip()))
            if self.take("}"):
                return tuple(tags)
            if not self.take(","):
                raise self.fail("expected ',' or '}' in the tag list")

    def aggregation(self, metric: str, allowed: set[str]) -> tuple[str, float | None]:
        self.skip()
        at = self.pos
        found = self.match(_AGGREGATION)
        if not found:
            raise self.fail(f"expected an aggregation for {metric}: {_describe(allowed)}")
        if found.group("n") is not None:
            percentile = float(found.group("n"))
            if "p" not in allowed:
                raise self.fail(f"{metric} has no percentiles; use {_describe(allowed)}", at)
            if not 0 <= percentile <= 100:
                raise self.fail(f"percentile {found.group('n')} is not between 0 and 100", at)
            return f"p({found.group('n')})", percentile
        word = found.group("word")
        if word not in allowed:
            raise self.fail(
                f"{word!r} is not an aggregation of {metric}; use {_describe(allowed)}", at
            )
        return word, None

    def unit(self, value: float, metric: str | None, aggregation: str) -> float:
        """The target in the metric's unit; ``metric`` is None for a series, which has none."""
        unit = self.match(_UNIT)
        if not unit:
            return value
        unit_at = unit.start()
        if unit.group() == "%":
            if aggregation != "rate" or metric not in _RATIOS:
                raise self.fail(
                    "'%' only applies to a ratio such as 'errors: rate < 1%' "
                    "(errors, checks, dropped or late)",
                    unit_at,
                )
            return value / 100
        if metric not in _LATENCY or aggregation == "count":
            what = f"{metric} {aggregation}" if metric is not None else "a server series"
            raise self.fail(f"{what} is not a duration", unit_at)
        return value * _UNITS_MS[unit.group()]


def _describe(allowed: set[str]) -> str:
    names = sorted("p(N)" if a == "p" else a for a in allowed)
    return ", ".join(names)


def _parse_mapping(data: Mapping[str, Any]) -> Threshold:
    text = data.get("threshold")
    if not isinstance(text, str):
        raise ThresholdError("the dict form needs a 'threshold' string", str(dict(data)))
    keys = {"threshold", "abort_on_fail", "abortOnFail", "delay_abort_eval", "delayAbortEval"}
    unknown = set(data) - keys
    if unknown:
        raise ThresholdError(f"unknown keys {sorted(unknown)} in the dict form", text)
    threshold = parse(text)
    abort = bool(data.get("abort_on_fail", data.get("abortOnFail", threshold.abort_on_fail)))
    delay = data.get("delay_abort_eval", data.get("delayAbortEval", 0))
    return dataclasses.replace(
        threshold, abort_on_fail=abort, delay_abort_eval=_seconds(delay, text)
    )


def _seconds(value: Any, text: str) -> float:
    """Seconds of a number (seconds) or a duration such as ``"1m30s"``, ``"500ms"``, ``"2h"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    plain = _SECONDS.fullmatch(str(value))
    if plain:
        return float(plain.group(1))
    if not _DURATION.fullmatch(str(value)):
        raise ThresholdError(
            f"delay_abort_eval {value!r} is not a duration like '30s', '1m30s' or '500ms'", text
        )
    return sum(
        float(number) * _DURATION_SCALE[unit] for number, unit in _DURATION_PART.findall(str(value))
    )


def _server_value(server: Mapping[str, Any], threshold: Threshold) -> float:
    wanted = dict(threshold.tags)
    matches = []
    for key, series in server.items():
        metric, _, labels = key.partition("{")
        if metric != threshold.metric:
            continue
        found = dict(_LABELS.findall(labels))
        if all(found.get(k) == v for k, v in wanted.items()):
            matches.append(series)
    if len(matches) != 1:
        return math.nan
    series = matches[0]
    agg = threshold.aggregation
    if isinstance(series, Mapping):
        key = percentile_key(threshold.percentile) if threshold.percentile is not None else agg
        if key in series:
            return float(series[key])
        series = series.get("values", [])
    if agg == "rate":
        # Only the scraper knows which series are counters, and a counter's resets.
        return math.nan
    if isinstance(series, int | float):
        return float(series)
    values = [float(v[-1] if isinstance(v, list | tuple) else v) for v in series]
    if not values:
        return math.nan
    if threshold.percentile is not None:
        ordered = sorted(values)
        rank = max(math.ceil(threshold.percentile / 100 * len(ordered)), 1)
        return ordered[rank - 1]
    reducers: dict[str, Callable[[list[float]], float]] = {
        "last": lambda v: v[-1],
        "avg": mean,
        "min": min,
        "max": max,
        "med": median,
        "count": len,
    }
    return float(reducers[agg](values))
