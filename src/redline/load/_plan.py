"""The plan model: scenarios, executors and their schedules, declarative steps, and the YAML and
Python loaders that build it, plus the presets that reshape a plan."""

from __future__ import annotations

import ast
import csv
import dataclasses
import difflib
import importlib.util
import inspect
import math
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from redline.load._errors import PlanError
from redline.load._thresholds import ThresholdError
from redline.load._thresholds import parse as parse_threshold

THRESHOLD_KEYS = ("threshold", "abort_on_fail", "abortOnFail", "delay_abort_eval", "delayAbortEval")

# --------------------------------------------------------------------------------------------
# Durations


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_HINT = "expected e.g. 30s, 5m, 1h30m, 250ms or a number of seconds"


def parse_duration(value: str | float) -> float:
    """Seconds in ``value``: a number of seconds, or a string such as "30s", "1h30m", "250ms"."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r} ({_DURATION_HINT})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"bad duration {value!r} ({_DURATION_HINT})") from None
    else:
        raise ValueError(f"bad duration {value!r} ({_DURATION_HINT})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad duration {value!r} (must be a finite, non-negative time)")
    return seconds


class _InvalidField(ValueError):
    """A constructor argument is invalid; names the argument so loaders can point at it."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        self.message = message
        super().__init__(f"{field_name}: {message}")


def _duration_field(obj: object, name: str, *, positive: bool = False) -> None:
    try:
        seconds = parse_duration(getattr(obj, name))
    except ValueError as exc:
        raise _InvalidField(name, str(exc)) from None
    if positive and seconds <= 0:
        raise _InvalidField(name, "must be longer than zero")
    object.__setattr__(obj, name, seconds)


def _count_field(obj: object, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _InvalidField(name, f"expected an integer, got {value!r}")
    if value < minimum:
        raise _InvalidField(name, f"must be at least {minimum}, got {value}")


def _rate_field(obj: object, name: str, *, positive: bool) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _InvalidField(name, f"expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _InvalidField(name, f"must be {'above' if positive else 'at least'} 0, got {value}")


# --------------------------------------------------------------------------------------------
# Schedules: piecewise-linear functions of time (VUs or arrivals per second)


@dataclass(frozen=True)
class _Segment:
    start: float
    duration: float
    begin: float  # value at ``start``
    end: float  # value at ``start + duration``
    before: float  # integral of the value over [0, start)

    def at(self, t: float) -> float:
        return self.begin + (self.end - self.begin) * (t - self.start) / self.duration


def _segments(start_value: float, stages: tuple[Stage, ...], scale: float = 1.0) -> list[_Segment]:
    segments, t, value, before = [], 0.0, start_value * scale, 0.0
    for stage in stages:
        target = stage.target * scale
        # A zero-length stage is a jump: it changes the value and adds nothing to the integral.
        if stage.duration > 0:
            segments.append(_Segment(t, stage.duration, value, target, before))
            before += (value + target) / 2 * stage.duration
            t += stage.duration
        value = target
    return segments


def _value_at(segments: list[_Segment], t: float) -> float:
    for seg in segments:
        if seg.start <= t < seg.start + seg.duration:
            return seg.at(t)
    return 0.0


def _arrivals(segments: list[_Segment], until: float) -> Iterator[float]:
    """The k-th arrival is at the t where the integral of the rate from 0 reaches k.

    Each time is solved from the integral, never by adding intervals, so 100k arrivals later
    the schedule is exactly where it should be.
    """
    k = 0
    for seg in segments:
        if seg.start >= until:
            return
        total = seg.before + (seg.begin + seg.end) / 2 * seg.duration
        half_slope = (seg.end - seg.begin) / (2 * seg.duration)
        while k < total:
            m = k - seg.before
            if m <= 0:
                x = 0.0
            else:
                # The root of half_slope*x^2 + begin*x - m = 0, in the form that stays
                # accurate when half_slope is tiny or zero.
                disc = max(0.0, seg.begin * seg.begin + 4 * half_slope * m)
                x = min(2 * m / (seg.begin + math.sqrt(disc)), seg.duration)
            t = seg.start + x
            if t >= until:
                return
            yield t
            k += 1


# --------------------------------------------------------------------------------------------
# Executors


@dataclass(frozen=True)
class Stage:
    """Move linearly to ``target`` (VUs, or arrivals per time unit) over ``duration``."""

    duration: float
    target: float

    def __post_init__(self) -> None:
        _duration_field(self, "duration")
        _rate_field(self, "target", positive=False)


def _stages_field(obj: object, integer: bool) -> None:
    stages = obj.stages
    if not isinstance(stages, list | tuple) or not stages:
        raise _InvalidField("stages", "expected a non-empty list of stages")
    for i, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise _InvalidField(f"stages[{i}]", f"expected a Stage, got {stage!r}")
        if integer and stage.target != int(stage.target):
            raise _InvalidField(f"stages[{i}].target", f"expected whole VUs, got {stage.target}")
    if sum(s.duration for s in stages) <= 0:
        raise _InvalidField("stages", "the stages must last longer than zero in total")
    object.__setattr__(obj, "stages", tuple(stages))


@dataclass(frozen=True)
class ConstantVUs:
    """Closed model: ``vus`` users loop over the flow for ``duration``."""

    kind: ClassVar[str] = "constant-vus"
    open_model: ClassVar[bool] = False

    vus: int
    duration: float

    def __post_init__(self) -> None:
        _count_field(self, "vus", 1)
        _duration_field(self, "duration", positive=True)

    @property
    def total_duration(self) -> float:
        return self.duration

    def vus_at(self, t: float) -> int:
        return self.vus if 0 <= t < self.duration else 0


@dataclass(frozen=True)
class RampingVUs:
    """Closed model: the number of looping users follows ``stages``, starting at ``start_vus``.

    ``graceful_ramp_down`` is how long a user removed by a ramp down may finish its iteration.
    """

    kind: ClassVar[str] = "ramping-vus"
    open_model: ClassVar[bool] = False

    start_vus: int = 0
    stages: tuple[Stage, ...] = ()
    graceful_ramp_down: float = 30.0

    def __post_init__(self) -> None:
        _count_field(self, "start_vus", 0)
        _stages_field(self, integer=True)
        _duration_field(self, "graceful_ramp_down")

    @property
    def total_duration(self) -> float:
        return sum(stage.duration for stage in self.stages)

    def vus_at(self, t: float) -> int:
        """Users at ``t`` seconds: the straight line between stage targets, rounded down."""
        return math.floor(_value_at(_segments(self.start_vus, self.stages), t) + 1e-9)


@dataclass(frozen=True, kw_only=True)
class ConstantArrivalRate:
    """Open model: start ``rate`` iterations per ``time_unit``, whatever the responses do."""

    kind: ClassVar[str] = "constant-arrival-rate"
    open_model: ClassVar[bool] = True

    rate: float
    time_unit: float = 1.0
    duration: float
    pre_allocated_vus: int = 10
    max_vus: int | None = None

    def __post_init__(self) -> None:
        _rate_field(self, "rate", positive=True)
        _duration_field(self, "time_unit", positive=True)
        _duration_field(self, "duration", positive=True)
        _vu_pool_fields(self)

    @property
    def total_duration(self) -> float:
        return self.duration

    def rate_at(self, t: float) -> float:
        """Arrivals per second at ``t``."""
        return self.rate / self.time_unit if 0 <= t < self.duration else 0.0

    def arrivals(self, until: float | None = None) -> Iterator[float]:
        """Intended start offsets, in seconds, of every iteration before ``until``."""
        end = self.duration if until is None else min(until, self.duration)
        per_second = self.rate / self.time_unit
        return _arrivals([_Segment(0.0, self.duration, per_second, per_second, 0.0)], end)


@dataclass(frozen=True, kw_only=True)
class RampingArrivalRate:
    """Open model: the iteration start rate follows ``stages``, starting at ``start_rate``."""

    kind: ClassVar[str] = "ramping-arrival-rate"
    open_model: ClassVar[bool] = True

    start_rate: float = 0.0
    time_unit: float = 1.0
    stages: tuple[Stage, ...] = ()
    pre_allocated_vus: int = 10
    max_vus: int | None = None

    def __post_init__(self) -> None:
        _rate_field(self, "start_rate", positive=False)
        _duration_field(self, "time_unit", positive=True)
        _stages_field(self, integer=False)
        _vu_pool_fields(self)

    @property
    def total_duration(self) -> float:
        return sum(stage.duration for stage in self.stages)

    def _per_second(self) -> list[_Segment]:
        return _segments(self.start_rate, self.stages, 1 / self.time_unit)

    def rate_at(self, t: float) -> float:
        """Arrivals per second at ``t``."""
        return _value_at(self._per_second(), t)

    def arrivals(self, until: float | None = None) -> Iterator[float]:
        """Intended start offsets, in seconds, of every iteration before ``until``."""
        end = self.total_duration if until is None else min(until, self.total_duration)
        return _arrivals(self._per_second(), end)


_DEFAULT_MAX_VUS = 1000


def _vu_pool_fields(obj: ConstantArrivalRate | RampingArrivalRate) -> None:
    _count_field(obj, "pre_allocated_vus", 1)
    if obj.max_vus is None:
        object.__setattr__(obj, "max_vus", max(obj.pre_allocated_vus, _DEFAULT_MAX_VUS))
    _count_field(obj, "max_vus", 1)
    if obj.max_vus < obj.pre_allocated_vus:  # type: ignore[operator]
        raise _InvalidField(
            "max_vus", f"must be at least pre_allocated_vus ({obj.pre_allocated_vus})"
        )


Executor: TypeAlias = ConstantVUs | RampingVUs | ConstantArrivalRate | RampingArrivalRate
EXECUTORS: dict[str, type[Executor]] = {
    cls.kind: cls for cls in (ConstantVUs, RampingVUs, ConstantArrivalRate, RampingArrivalRate)
}

# --------------------------------------------------------------------------------------------
# Declarative steps


_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_JSON_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[(['\"])(.*?)\3\]")


def template_variables(text: str) -> tuple[str, ...]:
    """The ``{var}`` names used in ``text``."""
    return tuple(_VARIABLE.findall(text))


def render(text: str, variables: Mapping[str, Any]) -> str:
    """``text`` with each ``{var}`` replaced; unknown names are left as they are."""
    return _VARIABLE.sub(lambda m: str(variables[m[1]]) if m[1] in variables else m[0], text)


def render_json(value: Any, variables: Mapping[str, Any]) -> Any:
    """A JSON body with ``{var}`` rendered in its strings; a string that is exactly ``"{var}"``
    becomes the variable's value itself, keeping its type."""
    if isinstance(value, str):
        whole = _VARIABLE.fullmatch(value)
        if whole and whole[1] in variables:
            return variables[whole[1]]
        return render(value, variables)
    if isinstance(value, list):
        return [render_json(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render_json(item, variables) for key, item in value.items()}
    return value


def parse_json_path(expression: str) -> tuple[str | int, ...]:
    """``"$.data[0].id"`` as ``("data", 0, "id")``."""
    if not expression.startswith("$"):
        raise ValueError(f"bad JSON path {expression!r} (expected e.g. $.data[0].id)")
    parts: list[str | int] = []
    pos = 1
    while pos < len(expression):
        match = _JSON_PATH_PART.match(expression, pos)
        if match is None:
            raise ValueError(
                f"bad JSON path {expression!r} at position {pos} (expected e.g. $.data[0].id)"
            )
        name, index, _, quoted = match.groups()
        parts.append(int(index) if index is not None else (name if name is not None else quoted))
        pos = match.end()
    return tuple(parts)


@dataclass(frozen=True)
class Capture:
    """Store a value of the response in variable ``var``: a JSON path or a header."""

    var: str
    json: str | None = None
    header: str | None = None
    json_path: tuple[str | int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.json is None) == (self.header is None):
            raise _InvalidField(self.var, "capture exactly one of 'json' or 'header'")
        path = ()
        if self.json is not None:
            try:
                path = parse_json_path(self.json)
            except ValueError as exc:
                raise _InvalidField(f"{self.var}.json", str(exc)) from None
        object.__setattr__(self, "json_path", path)


@dataclass(frozen=True)
class Check:
    """What a response must satisfy to pass: one of ``status``, and ``body_contains``."""

    status: tuple[int, ...] = (200,)
    body_contains: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.status, int):
            object.__setattr__(self, "status", (self.status,))


@dataclass(frozen=True)
class Request:
    """One HTTP request; ``url`` may hold ``{var}``; results group under ``name``."""

    url: str
    method: str = "GET"
    name: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    body: str | None = None
    capture: tuple[Capture, ...] = ()
    check: Check | None = None

    def __post_init__(self) -> None:
        # Named after the template, so /api/calls/17 and /api/calls/18 are one row.
        if not self.name:
            object.__setattr__(self, "name", self.url)
        object.__setattr__(self, "method", self.method.upper())
        if self.json is not None and self.body is not None:
            raise _InvalidField("body", "give either 'json' or 'body', not both")
        if "://" in self.url.split("?", 1)[0] or self.url.startswith("//"):
            raise _InvalidField(
                "url",
                f"{self.url!r} is a full URL; requests go to the run's target, so give a "
                "path such as /api/calls (set the host with --target or 'target')",
            )

    def variables(self) -> set[str]:
        """The variables this request reads."""
        texts = [self.url, *self.headers.values(), self.body or ""]
        texts += _json_strings(self.json)
        return {name for text in texts for name in template_variables(text)}


def _json_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _json_strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _json_strings(item)]
    return []


@dataclass(frozen=True)
class Think:
    """Pause between ``min`` and ``max`` seconds (uniformly), like a user reading."""

    min: float
    max: float

    def __post_init__(self) -> None:
        _duration_field(self, "min")
        _duration_field(self, "max")
        if self.max < self.min:
            raise _InvalidField("think", f"the range ends ({self.max}) before it starts")


FeedMode = Literal["sequential", "random", "unique"]
FEED_MODES: tuple[str, ...] = ("sequential", "random", "unique")


@dataclass(frozen=True)
class Feed:
    """Take the next row of a CSV file; its columns become variables.

    ``sequential`` cycles through the rows, ``random`` picks any, ``unique`` hands each row out
    once across the whole run.
    """

    file: Path
    mode: FeedMode = "sequential"
    columns: tuple[str, ...] = ()


Step: TypeAlias = Request | Think | Feed
Flow: TypeAlias = tuple[Step, ...]
FlowFunction: TypeAlias = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Scenario:
    """A named workload: who arrives when (``executor``), and what each iteration does."""

    name: str
    executor: Executor
    flow: Flow | FlowFunction
    start_after: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """What ``apply_preset`` did, for the verdicts and the report to read.

    ``options`` are every option of the preset, given or defaulted, and ``windows`` the phases
    of the run, as (start, end) seconds from the run's start; both as resolved for
    ``scenario``, the longest scenario of the plan (the first of equals).
    """

    name: str
    scenario: str
    options: dict[str, Any]
    windows: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Plan:
    """Everything a run needs besides the target's address, which ``target`` may give;
    ``preset`` says how ``apply_preset`` reshaped it, if it did."""

    scenarios: tuple[Scenario, ...]
    thresholds: tuple[str | dict[str, Any], ...] = ()
    target: str | None = None
    source: str = "<plan>"
    preset: Preset | None = None

    @property
    def total_duration(self) -> float:
        """Seconds from the first scenario's start to the last one's end."""
        return max(s.start_after + s.executor.total_duration for s in self.scenarios)


# --------------------------------------------------------------------------------------------
# Loading


def load_plan(path: str | Path) -> Plan:
    """Read a YAML (``.yaml``, ``.yml``) or Python (``.py``) plan; PlanError says what is wrong."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".py"):
        raise PlanError("unknown plan type (expected a .yaml, .yml or .py file)", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the plan: {exc.strerror}", file=str(path)) from None
    if suffix == ".py":
        return _PythonLoader(path, text).load()
    return _YamlLoader(path, text).load()


def _unknown(problem: str, word: str, choices: tuple[str, ...] | list[str]) -> str:
    """``problem``, a "did you mean" when a choice is close to ``word``, and the choices."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{problem}{hint} (expected one of: {', '.join(choices)})"


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return names.get(type(value), type(value).__name__)


_SCENARIO_FIELDS = ("executor", "flow", "start_after", "tags")
_EXECUTOR_FIELDS: dict[str, dict[str, str]] = {
    # field -> kind of value; fields without a default in the dataclass are required.
    "constant-vus": {"vus": "count", "duration": "duration"},
    "ramping-vus": {"start_vus": "count", "stages": "stages", "graceful_ramp_down": "duration"},
    "constant-arrival-rate": {
        "rate": "number",
        "time_unit": "duration",
        "duration": "duration",
        "pre_allocated_vus": "count",
        "max_vus": "count",
    },
    "ramping-arrival-rate": {
        "start_rate": "number",
        "time_unit": "duration",
        "stages": "stages",
        "pre_allocated_vus": "count",
        "max_vus": "count",
    },
}
_REQUIRED_EXECUTOR_FIELDS = {
    "constant-vus": ("vus", "duration"),
    "ramping-vus": ("stages",),
    "constant-arrival-rate": ("rate", "duration"),
    "ramping-arrival-rate": ("stages",),
}
_REQUEST_FIELDS = ("method", "url", "name", "headers", "json", "body", "capture", "check")
_METHOD_STEPS = ("get", "post", "put", "patch", "delete", "head", "options")
_STEP_KINDS = ("request", *_METHOD_STEPS, "think", "feed")


class _YamlLoader:
    """Walks the composed node tree, so every error knows its line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.file = str(path)
        self.text = text
        self._constructor = SafeConstructor()

    def error(self, node_or_line: Node | int | None, fld: str | None, message: str) -> PlanError:
        line = node_or_line.start_mark.line + 1 if isinstance(node_or_line, Node) else node_or_line
        return PlanError(message, file=self.file, line=line, field=fld or None)

    def value(self, node: Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def load(self) -> Plan:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            problem = exc.problem or exc.context or "syntax error"
            raise PlanError(f"invalid YAML: {problem}", file=self.file, line=line) from None
        except yaml.YAMLError as exc:
            raise PlanError(f"invalid YAML: {exc}", file=self.file) from None
        if root is None:
            raise PlanError(
                "the plan is empty (expected a mapping with 'scenarios')", file=self.file, line=1
            )
        top = self.mapping(root, "", ("scenarios", "thresholds", "target"), line=1)
        if "scenarios" not in top:
            raise self.error(root, "scenarios", "missing required field")
        key_line, scenarios_node = top["scenarios"]
        entries = self.mapping(scenarios_node, "scenarios", None, line=key_line)
        if not entries:
            raise self.error(scenarios_node, "scenarios", "expected at least one scenario")
        scenarios = tuple(
            self.scenario(name, line, node, f"scenarios.{name}")
            for name, (line, node) in entries.items()
        )
        thresholds: tuple[str | dict[str, Any], ...] = ()
        if "thresholds" in top:
            node = top["thresholds"][1]
            items = self.sequence(node, "thresholds")
            thresholds = tuple(
                self.threshold(item, f"thresholds[{i}]") for i, item in enumerate(items)
            )
        target = None
        if "target" in top:
            target = self.string(top["target"][1], "target")
        return Plan(scenarios, thresholds, target, self.file)

    # ---- node helpers

    def mapping(
        self, node: Node, path: str, allowed: tuple[str, ...] | None, line: int
    ) -> dict[str, tuple[int, Node]]:
        """``{key: (line of key, value node)}``; rejects duplicates and unknown keys."""
        if not isinstance(node, MappingNode):
            raise self.error(node, path, f"expected a mapping, got {_type_name(self.value(node))}")
        out: dict[str, tuple[int, Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            key_line = key_node.start_mark.line + 1
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise self.error(key_node, path, f"keys must be strings, got {key!r}")
            if key in out:
                raise self.error(key_node, where, f"duplicate key (first on line {out[key][0]})")
            if allowed is not None and key not in allowed:
                raise self.error(key_node, where, _unknown("unknown field", key, allowed))
            out[key] = (key_line, value_node)
        return out

    def sequence(self, node: Node, path: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(node, path, f"expected a list, got {_type_name(self.value(node))}")
        return list(node.value)

    def scalar(self, node: Node, path: str, types: tuple[type, ...], what: str) -> Any:
        value = self.value(node)
        wrong_bool = isinstance(value, bool) and bool not in types
        if not isinstance(node, ScalarNode) or wrong_bool or not isinstance(value, types):
            shown = f" {value!r}" if isinstance(node, ScalarNode) and value is not None else ""
            raise self.error(node, path, f"expected {what}, got {_type_name(value)}{shown}")
        return value

    def string(self, node: Node, path: str) -> str:
        return self.scalar(node, path, (str,), "a string")

    def count(self, node: Node, path: str) -> int:
        return self.scalar(node, path, (int,), "an integer")

    def number(self, node: Node, path: str) -> float:
        return self.scalar(node, path, (int, float), "a number")

    def duration(self, node: Node, path: str) -> float:
        raw = self.scalar(node, path, (int, float, str), "a duration")
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise self.error(node, path, str(exc)) from None

    def threshold(self, node: Node, path: str) -> str | dict[str, Any]:
        """A threshold string, or the dict form with ``abort_on_fail``; checked here, so a
        bad one fails before any load is sent."""
        value: str | dict[str, Any]
        if isinstance(node, MappingNode):
            value = {}
            line = node.start_mark.line + 1
            for key, (_, child) in self.mapping(node, path, THRESHOLD_KEYS, line).items():
                where = f"{path}.{key}"
                if key == "threshold":
                    value[key] = self.string(child, where)
                elif key in ("abort_on_fail", "abortOnFail"):
                    value[key] = self.scalar(child, where, (bool,), "true or false")
                else:
                    value[key] = self.scalar(child, where, (int, float, str), "a duration")
        else:
            value = self.string(node, path)
        try:
            parse_threshold(value)
        except ThresholdError as exc:
            raise self.error(node, path, str(exc)) from None
        return value

    def string_map(self, node: Node, path: str, line: int) -> dict[str, str]:
        out = {}
        for key, (_, value) in self.mapping(node, path, None, line).items():
            raw = self.scalar(value, f"{path}.{key}", (str, int, float, bool), "a string")
            out[key] = raw if isinstance(raw, str) else str(raw)
        return out

    # ---- plan parts

    def scenario(self, name: str, line: int, node: Node, path: str) -> Scenario:
        raw = self.mapping(node, path, None, line)
        if "executor" not in raw:
            raise self.error(line, f"{path}.executor", "missing required field")
        kind_node = raw["executor"][1]
        kind = self.string(kind_node, f"{path}.executor")
        if kind not in EXECUTORS:
            raise self.error(
                kind_node,
                f"{path}.executor",
                f"unknown executor '{kind}' (expected one of: {', '.join(EXECUTORS)})",
            )
        fields = _EXECUTOR_FIELDS[kind]
        allowed = (*_SCENARIO_FIELDS, *fields)
        for key, (key_line, _) in raw.items():
            if key not in allowed:
                problem = (
                    f"not a field of executor {kind}"
                    if _is_executor_field(key)
                    else "unknown field"
                )
                raise self.error(key_line, f"{path}.{key}", _unknown(problem, key, allowed))
        for required in (*_REQUIRED_EXECUTOR_FIELDS[kind], "flow"):
            if required not in raw:
                raise self.error(line, f"{path}.{required}", "missing required field")
        args: dict[str, Any] = {}
        for key, what in fields.items():
            if key not in raw:
                continue
            key_line, value = raw[key]
            where = f"{path}.{key}"
            if what == "count":
                args[key] = self.count(value, where)
            elif what == "number":
                args[key] = self.number(value, where)
            elif what == "duration":
                args[key] = self.duration(value, where)
            else:
                args[key] = self.stages(value, where, integer=kind == "ramping-vus")
        try:
            executor = EXECUTORS[kind](**args)
        except _InvalidField as exc:
            top = exc.field.split("[")[0].split(".")[0]
            at = raw[top][1] if top in raw else line
            raise self.error(at, f"{path}.{exc.field}", exc.message) from None
        start_after = 0.0
        if "start_after" in raw:
            start_after = self.duration(raw["start_after"][1], f"{path}.start_after")
        tags = {}
        if "tags" in raw:
            tags = self.string_map(raw["tags"][1], f"{path}.tags", raw["tags"][0])
        flow = self.flow(raw["flow"][1], f"{path}.flow")
        return Scenario(name, executor, flow, start_after, tags)

    def stages(self, node: Node, path: str, integer: bool) -> tuple[Stage, ...]:
        items = self.sequence(node, path)
        if not items:
            raise self.error(node, path, "expected at least one stage")
        stages = []
        for i, item in enumerate(items):
            where = f"{path}[{i}]"
            raw = self.mapping(item, where, ("duration", "target"), item.start_mark.line + 1)
            for required in ("duration", "target"):
                if required not in raw:
                    raise self.error(item, f"{where}.{required}", "missing required field")
            duration = self.duration(raw["duration"][1], f"{where}.duration")
            target_node = raw["target"][1]
            if integer:
                target = self.count(target_node, f"{where}.target")
            else:
                target = self.number(target_node, f"{where}.target")
            if target < 0:
                raise self.error(
                    target_node, f"{where}.target", f"must be at least 0, got {target}"
                )
            stages.append(Stage(duration, target))
        return tuple(stages)

    def flow(self, node: Node, path: str) -> Flow:
        items = self.sequence(node, path)
        if not items:
            raise self.error(node, path, "expected at least one step")
        steps: list[Step] = []
        used: list[tuple[str, Node, str]] = []  # (variable, node, field) for the final check
        defined: set[str] = set()
        for i, item in enumerate(items):
            where = f"{path}[{i}]"
            raw = self.mapping(item, where, _STEP_KINDS, item.start_mark.line + 1)
            if len(raw) != 1:
                raise self.error(
                    item, where, f"a step has exactly one of: {', '.join(_STEP_KINDS)}"
                )
            ((kind, (key_line, value)),) = raw.items()
            where = f"{where}.{kind}"
            if kind == "think":
                steps.append(self.think(value, where))
            elif kind == "feed":
                feed = self.feed(value, where, key_line)
                defined.update(feed.columns)
                steps.append(feed)
            else:
                request = self.request(value, where, key_line, kind, used)
                defined.update(c.var for c in request.capture)
                steps.append(request)
        for name, at, where in used:
            if name not in defined:
                known = ", ".join(sorted(defined)) or "none"
                raise self.error(
                    at,
                    where,
                    f"unknown variable '{name}' (no feed or capture in this flow defines it;"
                    f" defined: {known})",
                )
        return tuple(steps)

    def think(self, node: Node, path: str) -> Think:
        raw = self.scalar(node, path, (int, float, str), "seconds or a 'min-max' range")
        if isinstance(raw, str) and "-" in raw:
            low_text, _, high_text = raw.partition("-")
            try:
                low, high = parse_duration(low_text), parse_duration(high_text)
            except ValueError as exc:
                raise self.error(node, path, str(exc)) from None
            if high < low:
                raise self.error(node, path, f"the range '{raw}' ends before it starts")
            return Think(low, high)
        seconds = self.duration(node, path)
        return Think(seconds, seconds)

    def feed(self, node: Node, path: str, line: int) -> Feed:
        if isinstance(node, ScalarNode):
            file_node, mode = node, "sequential"
        else:
            raw = self.mapping(node, path, ("file", "mode"), line)
            if "file" not in raw:
                raise self.error(line, f"{path}.file", "missing required field")
            file_node = raw["file"][1]
            mode = "sequential"
            if "mode" in raw:
                mode_node = raw["mode"][1]
                mode = self.string(mode_node, f"{path}.mode")
                if mode not in FEED_MODES:
                    raise self.error(
                        mode_node,
                        f"{path}.mode",
                        f"unknown mode '{mode}' (expected one of: {', '.join(FEED_MODES)})",
                    )
        name = self.string(file_node, f"{path}.file")
        file = (self.path.parent / name).resolve()
        try:
            columns = _csv_columns(file)
        except (OSError, ValueError) as exc:
            message = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise self.error(
                file_node, f"{path}.file", f"cannot read '{name}': {message}"
            ) from None
        return Feed(file, mode, columns)  # type: ignore[arg-type]

    def request(
        self, node: Node, path: str, line: int, kind: str, used: list[tuple[str, Node, str]]
    ) -> Request:
        if kind != "request" and isinstance(node, ScalarNode):
            url = self.string(node, path)
            for name in template_variables(url):
                used.append((name, node, path))
            try:
                return Request(url, kind.upper())
            except _InvalidField as exc:
                raise self.error(node, path, exc.message) from None
        allowed = _REQUEST_FIELDS if kind == "request" else _REQUEST_FIELDS[1:]
        raw = self.mapping(node, path, allowed, line)
        if "url" not in raw:
            raise self.error(line, f"{path}.url", "missing required field")
        args: dict[str, Any] = {"method": "GET" if kind == "request" else kind.upper()}
        for key in ("method", "url", "name", "body"):
            if key in raw:
                args[key] = self.string(raw[key][1], f"{path}.{key}")
        if "method" in args and not re.fullmatch(r"[A-Za-z]+", args["method"]):
            raise self.error(raw["method"][1], f"{path}.method", f"bad method {args['method']!r}")
        if "headers" in raw:
            args["headers"] = self.string_map(
                raw["headers"][1], f"{path}.headers", raw["headers"][0]
            )
        if "json" in raw:
            args["json"] = self.value(raw["json"][1])
        if "json" in raw and "body" in raw:
            raise self.error(
                raw["body"][0], f"{path}.body", "give either 'json' or 'body', not both"
            )
        if "capture" in raw:
            args["capture"] = self.captures(raw["capture"][1], f"{path}.capture", raw["capture"][0])
        if "check" in raw:
            args["check"] = self.check(raw["check"][1], f"{path}.check", raw["check"][0])
        for key in ("url", "headers", "json", "body"):
            if key in raw:
                value_node = raw[key][1]
                for text in _json_strings(self.value(value_node)):
                    for name in template_variables(text):
                        used.append((name, value_node, f"{path}.{key}"))
        try:
            return Request(**args)
        except _InvalidField as exc:
            where = exc.field if exc.field in raw else "url"
            raise self.error(raw[where][1], f"{path}.{where}", exc.message) from None

    def captures(self, node: Node, path: str, line: int) -> tuple[Capture, ...]:
        captures = []
        for var, (var_line, value) in self.mapping(node, path, None, line).items():
            where = f"{path}.{var}"
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise self.error(var_line, where, "a variable name is letters, digits and _")
            raw = self.mapping(value, where, ("json", "header"), var_line)
            if len(raw) != 1:
                raise self.error(var_line, where, "capture exactly one of 'json' or 'header'")
            ((source, (_, source_node)),) = raw.items()
            expression = self.string(source_node, f"{where}.{source}")
            try:
                captures.append(Capture(var, **{source: expression}))
            except _InvalidField as exc:
                raise self.error(source_node, f"{where}.{source}", exc.message) from None
        return tuple(captures)

    def check(self, node: Node, path: str, line: int) -> Check:
        raw = self.mapping(node, path, ("status", "body_contains"), line)
        args: dict[str, Any] = {}
        if "status" in raw:
            status_node = raw["status"][1]
            where = f"{path}.status"
            if isinstance(status_node, SequenceNode):
                codes = tuple(
                    self.count(item, f"{where}[{i}]") for i, item in enumerate(status_node.value)
                )
            else:
                codes = (self.count(status_node, where),)
            for code in codes:
                if not 100 <= code <= 599:
                    raise self.error(status_node, where, f"not an HTTP status: {code}")
            if not codes:
                raise self.error(status_node, where, "expected at least one status")
            args["status"] = codes
        if "body_contains" in raw:
            args["body_contains"] = self.string(raw["body_contains"][1], f"{path}.body_contains")
        return Check(**args)


def _is_executor_field(key: str) -> bool:
    return any(key in fields for fields in _EXECUTOR_FIELDS.values())


def _csv_columns(file: Path) -> tuple[str, ...]:
    with file.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
        if not header:
            raise ValueError("the file is empty (expected a header row naming the columns)")
        if next(csv.reader(handle), None) is None:
            raise ValueError("the file has a header but no rows")
    return tuple(column.strip() for column in header)


# --------------------------------------------------------------------------------------------
# Python plans

_SCENARIO_ATTRIBUTE = "__redline_scenario__"


@dataclass(frozen=True)
class _ScenarioSpec:
    executor: Executor
    name: str | None
    start_after: str | float
    tags: dict[str, str]


def scenario(
    executor: Executor,
    *,
    name: str | None = None,
    start_after: str | float = 0.0,
    tags: Mapping[str, str] | None = None,
) -> Callable[[FlowFunction], FlowFunction]:
    """Mark ``async def flow(vu)`` in a Python plan as a scenario run by ``executor``."""

    def mark(function: FlowFunction) -> FlowFunction:
        setattr(
            function,
            _SCENARIO_ATTRIBUTE,
            _ScenarioSpec(
                executor,
                name,
                start_after,
                dict(tags or {}),  # type: ignore[arg-type]
            ),
        )
        return function

    return mark


class _PythonLoader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.file = str(path)
        self.text = text
        self.lines: dict[str, int] = {}

    def error(self, line: int | None, fld: str | None, message: str) -> PlanError:
        return PlanError(message, file=self.file, line=line, field=fld)

    def load(self) -> Plan:
        module = self.import_module()
        for stmt in ast.parse(self.text).body:
            targets = []
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    self.lines[target.id] = stmt.lineno
        scenarios = self.decorated(module) + self.declared(module)
        if not scenarios:
            raise self.error(
                None,
                None,
                "no scenarios (define SCENARIOS = {...} or decorate async functions with"
                " @scenario(executor=...))",
            )
        seen: set[str] = set()
        for item in scenarios:
            if item.name in seen:
                raise self.error(self.line_of(item.flow), item.name, "two scenarios share a name")
            seen.add(item.name)
        thresholds = getattr(module, "THRESHOLDS", ())
        if not isinstance(thresholds, list | tuple) or not all(
            isinstance(t, str | Mapping) for t in thresholds
        ):
            raise self.error(
                self.lines.get("THRESHOLDS"),
                "THRESHOLDS",
                "expected a list of threshold strings or {'threshold': ...} dicts",
            )
        for index, item in enumerate(thresholds):
            try:
                parse_threshold(item)
            except ThresholdError as exc:
                raise self.error(
                    self.lines.get("THRESHOLDS"), f"THRESHOLDS[{index}]", str(exc)
                ) from None
        thresholds = [dict(t) if isinstance(t, Mapping) else t for t in thresholds]
        target = getattr(module, "TARGET", None)
        if target is not None and not isinstance(target, str):
            raise self.error(self.lines.get("TARGET"), "TARGET", "expected a string URL")
        return Plan(tuple(scenarios), tuple(thresholds), target, self.file)

    def import_module(self) -> Any:
        module_name = f"redline_plan_{abs(hash(str(self.path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, self.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Registered before running so dataclasses and pickling inside the plan find it.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(module_name, None)
            raise self.error(exc.lineno, None, f"invalid Python: {exc.msg}") from None
        except PlanError:
            sys.modules.pop(module_name, None)
            raise
        except Exception as exc:
            sys.modules.pop(module_name, None)
            line = None
            for frame in traceback.extract_tb(exc.__traceback__):
                if Path(frame.filename).resolve() == self.path.resolve():
                    line = frame.lineno
            if isinstance(exc, _InvalidField):
                raise self.error(line, exc.field, exc.message) from None
            raise self.error(line, None, f"{type(exc).__name__}: {exc}") from None
        return module

    def line_of(self, obj: Any) -> int | None:
        code = getattr(obj, "__code__", None)
        return code.co_firstlineno if code is not None else None

    def flow(self, flow: Any, fld: str, line: int | None) -> Flow | FlowFunction:
        if isinstance(flow, list | tuple):
            for i, step in enumerate(flow):
                if not isinstance(step, Request | Think | Feed):
                    raise self.error(
                        line, f"{fld}[{i}]", f"expected a Request, Think or Feed, got {step!r}"
                    )
            if not flow:
                raise self.error(line, fld, "expected at least one step")
            return tuple(flow)
        if not inspect.iscoroutinefunction(flow):
            what = "a function that is not async" if callable(flow) else repr(flow)
            raise self.error(
                self.line_of(flow) or line,
                fld,
                f"expected an async function 'async def flow(vu)', got {what}",
            )
        try:
            inspect.signature(flow).bind(None)
        except TypeError:
            raise self.error(
                self.line_of(flow), fld, "a flow function takes exactly one argument, the VU"
            ) from None
        return flow

    def build(
        self,
        name: str,
        executor: Any,
        flow: Any,
        start_after: Any,
        tags: Any,
        fld: str,
        line: int | None,
    ) -> Scenario:
        if not isinstance(
            executor, ConstantVUs | RampingVUs | ConstantArrivalRate | RampingArrivalRate
        ):
            raise self.error(
                line,
                f"{fld}.executor",
                f"expected one of ConstantVUs, RampingVUs, ConstantArrivalRate, "
                f"RampingArrivalRate, got {executor!r}",
            )
        try:
            start = parse_duration(start_after)
        except ValueError as exc:
            raise self.error(line, f"{fld}.start_after", str(exc)) from None
        if not isinstance(tags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise self.error(line, f"{fld}.tags", "expected a mapping of strings to strings")
        return Scenario(name, executor, self.flow(flow, f"{fld}.flow", line), start, dict(tags))

    def decorated(self, module: Any) -> list[Scenario]:
        functions = [
            value
            for value in vars(module).values()
            if callable(value) and hasattr(value, _SCENARIO_ATTRIBUTE)
        ]
        functions.sort(key=lambda f: self.line_of(f) or 0)
        scenarios = []
        for function in functions:
            spec: _ScenarioSpec = getattr(function, _SCENARIO_ATTRIBUTE)
            name = spec.name or function.__name__
            scenarios.append(
                self.build(
                    name,
                    spec.executor,
                    function,
                    spec.start_after,
                    spec.tags,
                    name,
                    self.line_of(function),
                )
            )
        return scenarios

    def declared(self, module: Any) -> list[Scenario]:
        if not hasattr(module, "SCENARIOS"):
            return []
        declared = module.SCENARIOS
        line = self.lines.get("SCENARIOS")
        if not isinstance(declared, Mapping):
            raise self.error(line, "SCENARIOS", f"expected a dict of scenarios, got {declared!r}")
        scenarios = []
        for name, value in declared.items():
            fld = f"SCENARIOS.{name}"
            if not isinstance(name, str):
                raise self.error(line, "SCENARIOS", f"scenario names are strings, got {name!r}")
            if isinstance(value, Scenario):
                scenarios.append(dataclasses.replace(value, name=name))
                continue
            if not isinstance(value, Mapping):
                raise self.error(line, fld, f"expected a Scenario or a dict, got {value!r}")
            for key in value:
                if key not in _SCENARIO_FIELDS:
                    raise self.error(
                        line, f"{fld}.{key}", _unknown("unknown field", str(key), _SCENARIO_FIELDS)
                    )
            for required in ("executor", "flow"):
                if required not in value:
                    raise self.error(line, f"{fld}.{required}", "missing required field")
            scenarios.append(
                self.build(
                    name,
                    value["executor"],
                    value["flow"],
                    value.get("start_after", 0.0),
                    value.get("tags", {}),
                    fld,
                    line,
                )
            )
        return scenarios


# --------------------------------------------------------------------------------------------
# Writing YAML


def dump_plan(plan: Plan) -> str:
    """The YAML text of a declarative plan; ``load_plan`` of it gives the same plan back."""
    scenarios: dict[str, Any] = {}
    for item in plan.scenarios:
        if callable(item.flow):
            raise PlanError(
                "a scenario with a Python flow function cannot be written as YAML",
                file=plan.source,
                field=f"scenarios.{item.name}.flow",
            )
        executor = item.executor
        entry: dict[str, Any] = {"executor": executor.kind}
        for f in dataclasses.fields(executor):
            value = getattr(executor, f.name)
            if f.name == "stages":
                value = [{"duration": s.duration, "target": s.target} for s in value]
            entry[f.name] = value
        if item.start_after:
            entry["start_after"] = item.start_after
        if item.tags:
            entry["tags"] = dict(item.tags)
        entry["flow"] = [_dump_step(step) for step in item.flow]
        scenarios[item.name] = entry
    document: dict[str, Any] = {}
    if plan.target is not None:
        document["target"] = plan.target
    if plan.thresholds:
        document["thresholds"] = list(plan.thresholds)
    document["scenarios"] = scenarios
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _dump_step(step: Step) -> dict[str, Any]:
    if isinstance(step, Think):
        return {"think": step.min if step.min == step.max else f"{step.min}-{step.max}"}
    if isinstance(step, Feed):
        return {"feed": {"file": str(step.file), "mode": step.mode}}
    out: dict[str, Any] = {"method": step.method, "url": step.url}
    if step.name != step.url:
        out["name"] = step.name
    if step.headers:
        out["headers"] = dict(step.headers)
    if step.json is not None:
        out["json"] = step.json
    if step.body is not None:
        out["body"] = step.body
    if step.capture:
        out["capture"] = {
            c.var: {"json": c.json} if c.json is not None else {"header": c.header}
            for c in step.capture
        }
    if step.check is not None:
        check: dict[str, Any] = {"status": list(step.check.status)}
        if step.check.body_contains is not None:
            check["body_contains"] = step.check.body_contains
        out["check"] = check
    return {"request": out}


# --------------------------------------------------------------------------------------------
# Presets

PRESETS: tuple[str, ...] = ("load", "stress", "spike", "soak", "breakpoint")


class _Shape(NamedTuple):
    """A scenario reshaped by a preset, with the options and windows it was reshaped by."""

    executor: Executor
    options: dict[str, Any]
    windows: dict[str, tuple[float, float]]  # seconds from the scenario's start


def apply_preset(plan: Plan, name: str, **options: Any) -> Plan:
    """``plan`` reshaped by preset ``name``; each scenario is reshaped around its own peak load.

    - ``load``: unchanged.
    - ``stress(steps=4, duration=<scenario's>)``: steps of 1x, 2x, ... ``steps``x the load, each
      ramped to over a tenth of its length and then held. Windows ``1x``, ``2x``, ...
    - ``spike(factor=50, hold=<a tenth of the duration>, duration=<scenario's>)``: the load for
      a quarter of the time, a jump to ``factor``x held for ``hold``, then the load again, so
      the report can show how long the target takes to recover. Windows ``before``,
      ``spike`` and ``after``.
    - ``soak(duration="30m")``: the peak load held constant. Window ``hold``.
    - ``breakpoint(factor=10, duration=<scenario's>)``: the rate (or VUs) ramps from the load
      to ``factor``x until the end; the runner stops at the first failing threshold. Window
      ``ramp``.

    The returned plan's ``preset`` records the options and windows (see ``Preset``).
    """
    presets: dict[str, Callable[..., _Shape]] = {
        "stress": _stress,
        "spike": _spike,
        "soak": _soak,
        "breakpoint": _breakpoint,
    }
    if name == "load":
        if options:
            raise PlanError(
                f"preset 'load' takes no options, got {sorted(options)}",
                file=plan.source,
                field="preset",
            )
        return plan
    if name not in presets:
        raise PlanError(
            _unknown(f"unknown preset '{name}'", name, PRESETS), file=plan.source, field="preset"
        )
    reshape = presets[name]
    accepted = set(inspect.signature(reshape).parameters) - {"executor"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise PlanError(
            f"unknown option(s) {', '.join(unknown)} for preset '{name}'"
            f" (expected: {', '.join(sorted(accepted))})",
            file=plan.source,
            field="preset",
        )
    scenarios, shapes = [], []
    for item in plan.scenarios:
        try:
            shape = reshape(item.executor, **options)
        except (_InvalidField, ValueError) as exc:
            raise PlanError(str(exc), file=plan.source, field=f"preset.{name}") from None
        scenarios.append(dataclasses.replace(item, executor=shape.executor))
        shapes.append(shape)
    # max() keeps the first of equals: with a common duration, the first scenario leads.
    lead = max(range(len(scenarios)), key=lambda i: scenarios[i].executor.total_duration)
    offset = scenarios[lead].start_after
    preset = Preset(
        name,
        scenarios[lead].name,
        shapes[lead].options,
        {
            window: (offset + start, offset + end)
            for window, (start, end) in shapes[lead].windows.items()
        },
    )
    return dataclasses.replace(plan, scenarios=tuple(scenarios), preset=preset)


def _peak(executor: Executor) -> float:
    if isinstance(executor, ConstantVUs):
        return executor.vus
    if isinstance(executor, ConstantArrivalRate):
        return executor.rate
    start = executor.start_vus if isinstance(executor, RampingVUs) else executor.start_rate
    return max(start, *(stage.target for stage in executor.stages))


def _shaped(executor: Executor, start: float, stages: list[Stage], growth: float) -> Executor:
    """A ramping executor of the same model as ``executor``, following ``stages``."""
    if executor.open_model:
        assert isinstance(executor, ConstantArrivalRate | RampingArrivalRate)
        return RampingArrivalRate(
            start_rate=start,
            time_unit=executor.time_unit,
            stages=tuple(stages),
            pre_allocated_vus=executor.pre_allocated_vus,
            max_vus=math.ceil(executor.max_vus * growth),  # type: ignore[operator]
        )
    ramp_down = executor.graceful_ramp_down if isinstance(executor, RampingVUs) else 30.0
    return RampingVUs(
        int(start),
        tuple(Stage(s.duration, math.ceil(s.target)) for s in stages),
        ramp_down,
    )


def _length(executor: Executor, duration: str | float | None) -> float:
    seconds = executor.total_duration if duration is None else parse_duration(duration)
    if seconds <= 0:
        raise ValueError(f"duration: must be longer than zero, got {duration!r}")
    return seconds


def _stress(executor: Executor, steps: int = 4, duration: str | float | None = None) -> _Shape:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a whole number of at least 1, got {steps!r}")
    base, length = _peak(executor), _length(executor, duration)
    step = length / steps
    stages, windows = [], {}
    for level in range(1, steps + 1):
        stages += [Stage(step / 10, base * level), Stage(step - step / 10, base * level)]
        windows[f"{level}x"] = (step * (level - 1), step * level)
    return _Shape(
        _shaped(executor, base, stages, steps), {"steps": steps, "duration": length}, windows
    )


def _spike(
    executor: Executor,
    factor: float = 50,
    hold: str | float | None = None,
    duration: str | float | None = None,
) -> _Shape:
    base, length = _peak(executor), _length(executor, duration)
    spike = length / 10 if hold is None else parse_duration(hold)
    before = length / 4
    if not 0 < spike < length - before:
        raise ValueError(f"hold: must be above 0 and end before the run does, got {hold!r}")
    if factor < 1:
        raise ValueError(f"factor: must be at least 1, got {factor!r}")
    stages = [
        Stage(before, base),
        Stage(0, base * factor),
        Stage(spike, base * factor),
        Stage(0, base),
        Stage(length - before - spike, base),
    ]
    return _Shape(
        _shaped(executor, base, stages, factor),
        {"factor": factor, "hold": spike, "duration": length},
        {
            "before": (0.0, before),
            "spike": (before, before + spike),
            "after": (before + spike, length),
        },
    )


def _soak(executor: Executor, duration: str | float = "30m") -> _Shape:
    length, peak = _length(executor, duration), _peak(executor)
    if isinstance(executor, ConstantArrivalRate | RampingArrivalRate):
        held: Executor = ConstantArrivalRate(
            rate=peak,
            time_unit=executor.time_unit,
            duration=length,
            pre_allocated_vus=executor.pre_allocated_vus,
            max_vus=executor.max_vus,
        )
    else:
        held = ConstantVUs(int(peak), length)
    return _Shape(held, {"duration": length}, {"hold": (0.0, length)})


def _breakpoint(
    executor: Executor, factor: float = 10, duration: str | float | None = None
) -> _Shape:
    if factor <= 1:
        raise ValueError(f"factor: must be above 1, got {factor!r}")
    base, length = _peak(executor), _length(executor, duration)
    return _Shape(
        _shaped(executor, base, [Stage(length, base * factor)], factor),
        {"factor": factor, "duration": length},
        {"ramp": (0.0, length)},
    )
