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
``endpoints["list-calls"]``); it is the only tag built-in metrics know, but for ``scenario:``
on ``dropped`` and ``late`` (``dropped{scenario:checkout}: count == 0`` reads
``scenarios["checkout"]``).

Abort on fail: end the threshold with ``!`` (``errors: rate < 0.05 !``), or use the dict form
``{"threshold": "errors: rate < 0.05", "abort_on_fail": true, "delay_abort_eval": "1m30s"}``
(k6's ``abortOnFail``/``delayAbortEval`` spellings are accepted too; the delay is seconds, or
a duration of ``h``, ``m``, ``s`` and ``ms`` parts). The engine checks such thresholds during
the run, after the delay, and stops the run when one fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from statistics import mean, median
from typing import Any

from redline.load._errors import RedlineLoadError
from redline.load._metrics import percentile_key

_BUILTIN = {"latency", "service_time", "errors", "requests", "rps", "dropped", "late"}
_LATENCY = {"latency", "service_time"}
_AGGREGATIONS: dict[str, tuple[set[str], str | None]] = {
    "latency": ({"p", "avg", "min", "max", "med", "count"}, None),
    "service_time": ({"p", "avg", "min", "max", "med", "count"}, None),
    "errors": ({"rate", "count"}, "rate"),
    "requests": ({"rate", "count"}, "count"),
    "rps": ({"rate", "avg"}, "rate"),
    "dropped": ({"rate", "count"}, "count"),
    "late": ({"rate", "count"}, "count"),
}
_SERVER_AGGREGATIONS = ({"p", "avg", "min", "max", "med", "count", "last"}, "last")
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
_AGGREGATION = re.compile(r"p\s*\(\s*(?P<n>[0-9]*\.?[0-9]+)\s*\)|(?P<word>[A-Za-z_]\w*)")
_OP = re.compile(r"<=|>=|==|!=|<|>")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_UNIT = re.compile(r"ms|µs|us|s|%")
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_BARE_VALUE = re.compile(r"[^,}]+")
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*")
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
    """One parsed threshold; ``evaluate`` reads its value from a summary."""

    expression: str
    metric: str
    aggregation: str
    op: str
    target: float
    tags: tuple[tuple[str, str], ...] = ()
    percentile: float | None = None
    abort_on_fail: bool = False
    delay_abort_eval: float = 0.0
    _compare: Callable[[float, float], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compare", _OPS[self.op])

    def evaluate(self, summary: Mapping[str, Any]) -> tuple[bool, float]:
        """``(ok, value)``; a value the summary does not have is NaN and fails."""
        value = self._value(summary)
        return (not math.isnan(value) and self._compare(value, self.target)), value

    def _value(self, summary: Mapping[str, Any]) -> float:
        if self.metric not in _BUILTIN:
            return _server_value(summary.get("server") or {}, self)
        tags = dict(self.tags)
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
        counted = requests.get({"errors": "failed"}.get(self.metric, self.metric), 0)
        if agg == "count":
            return float(counted)
        scheduled = total if self.metric == "errors" else total + requests.get("dropped", 0)
        return counted / scheduled if scheduled else 0.0


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
        name = self.match(_NAME)
        if not name:
            raise self.fail("expected a metric name such as latency, errors or rps")
        metric = name.group()
        allowed, default = _AGGREGATIONS.get(metric, _SERVER_AGGREGATIONS)
        tags = self.tags(metric) if self.take("{") else ()
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
        target = self.unit(float(number.group()), metric, aggregation)
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
        )

    def tags(self, metric: str) -> tuple[tuple[str, str], ...]:
        tags = []
        while True:
            key = self.match(_NAME)
            if not key:
                raise self.fail("expected a tag name, e.g. {name:list-calls}")
            if metric in _BUILTIN and key.group() != "name":
                raise self.fail(
                    f"unknown tag {key.group()!r}; {metric} can only be filtered by name:",
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

    def unit(self, value: float, metric: str, aggregation: str) -> float:
        unit = self.match(_UNIT)
        if not unit:
            return value
        unit_at = unit.start()
        if unit.group() == "%":
            if aggregation != "rate" or metric in ("rps", "requests"):
                raise self.fail("'%' only applies to a rate such as 'errors: rate < 1%'", unit_at)
            return value / 100
        if metric not in _LATENCY or aggregation == "count":
            raise self.fail(f"{metric} {aggregation} is not a duration", unit_at)
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
    return Threshold(
        expression=threshold.expression,
        metric=threshold.metric,
        aggregation=threshold.aggregation,
        op=threshold.op,
        target=threshold.target,
        tags=threshold.tags,
        percentile=threshold.percentile,
        abort_on_fail=abort,
        delay_abort_eval=_seconds(delay, text),
    )


def _seconds(value: Any, text: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = _DURATION.fullmatch(str(value))
    if not found:
        raise ThresholdError(f"delay_abort_eval {value!r} is not a duration like '30s'", text)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[found.group(2) or "s"]
    return float(found.group(1)) * scale


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
