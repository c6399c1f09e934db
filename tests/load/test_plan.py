"""The plan model, its YAML and Python loaders, schedules and presets (redline/load/_plan.py)."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pytest

from redline import RedlineError
from redline.load._errors import PlanError
from redline.load._plan import (
    Capture,
    Check,
    ConstantArrivalRate,
    ConstantVUs,
    Feed,
    Plan,
    Preset,
    RampingArrivalRate,
    RampingVUs,
    Request,
    Scenario,
    Stage,
    Think,
    apply_preset,
    dump_plan,
    load_plan,
    parse_duration,
    parse_json_path,
    render,
    render_json,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "load.md"

FULL_PLAN = """\
# Every feature of a YAML plan.
target: http://127.0.0.1:8000
thresholds:
  - "latency{name:list-calls}: p(95) < 200"
  - "errors: rate < 0.01"
scenarios:
  browse:
    executor: constant-vus
    vus: 10
    duration: 1m30s
    tags:
      team: calls
      build: 7
    flow:
      - feed: {file: users.csv, mode: unique}
      - request:
          method: POST
          url: /api/login
          headers: {X-User: "{username}"}
          json: {user: "{username}", password: "{password}", remember: true}
          capture:
            token: {json: "$.token"}
            request_id: {header: X-Request-Id}
          check: {status: [200, 201]}
      - request:
          url: /api/calls
          name: list-calls
          headers: {Authorization: "Bearer {token}"}
          capture:
            id: {json: "$.data[0].id"}
          check: {status: 200, body_contains: '"data"'}
      - get: /api/calls/{id}
      - think: 1-3
  ramp:
    executor: ramping-vus
    start_vus: 2
    stages:
      - {duration: 30s, target: 20}
      - {duration: 1m, target: 20}
      - {duration: 10s, target: 0}
    graceful_ramp_down: 5s
    start_after: 30s
    flow:
      - delete: /api/session
      - think: 250ms
  orders:
    executor: constant-arrival-rate
    rate: 300
    time_unit: 1m
    duration: 2m
    pre_allocated_vus: 20
    max_vus: 200
    flow:
      - feed: products.csv
      - post:
          url: /api/orders
          body: "sku={sku}"
          headers: {Content-Type: application/x-www-form-urlencoded}
  search:
    executor: ramping-arrival-rate
    start_rate: 10
    stages:
      - {duration: 1m, target: 100.5}
      - {duration: 0s, target: 5}
      - {duration: 30s, target: 5}
    flow:
      - request: {method: get, url: "/api/search?q=x"}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def feeds(tmp_path: Path) -> Path:
    (tmp_path / "users.csv").write_text("username,password\nann,pw1\nbob,pw2\n")
    (tmp_path / "products.csv").write_text("sku\nA1\nB2\n")
    return tmp_path


def plan_error(tmp_path: Path, text: str, name: str = "plan.yaml") -> PlanError:
    path = write(tmp_path, name, text)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert caught.value.file == str(path)
    return caught.value


def where(err: PlanError) -> tuple[int | None, str | None]:
    return err.line, err.field


# ---------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("1h0m5s250ms", 3605.25),
        (" 10s ", 10.0),
        ("45", 45.0),
        (12, 12.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_durations_parse_units_and_plain_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "30x", "1h 30m", "-5s", "m30", "5m-", True, None])
def test_bad_durations_are_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_executors_accept_duration_strings() -> None:
    assert ConstantVUs(10, "30s") == ConstantVUs(10, 30)
    assert ConstantArrivalRate(rate=5, time_unit="1m", duration="1h").time_unit == 60.0


# ---------------------------------------------------------------------------------- schedules


def test_constant_rate_arrivals_are_exact_with_no_drift_over_100k() -> None:
    executor = ConstantArrivalRate(rate=1000, duration="100s")
    arrivals = list(executor.arrivals())
    assert len(arrivals) == 100_000
    for k, t in enumerate(arrivals):
        assert abs(t - k / 1000) < 1e-9
    gaps = {round(b - a, 9) for a, b in zip(arrivals, arrivals[1:], strict=False)}
    assert gaps == {0.001}
    assert arrivals[-1] == pytest.approx(99.999, abs=1e-9)


def test_constant_rate_honours_time_unit_and_until() -> None:
    executor = ConstantArrivalRate(rate=120, time_unit="1m", duration="10s")
    assert executor.rate_at(3) == 2.0
    assert executor.rate_at(10) == 0.0
    assert list(executor.arrivals()) == pytest.approx([k / 2 for k in range(20)])
    assert len(list(executor.arrivals(until=2.2))) == 5


def integral(executor: RampingArrivalRate, until: float, steps: int = 200_000) -> float:
    """Arrivals expected before ``until``, by the midpoint rule (independent of the code)."""
    h = until / steps
    return sum(executor.rate_at((i + 0.5) * h) for i in range(steps)) * h


def test_ramping_rate_arrivals_match_the_integral() -> None:
    executor = RampingArrivalRate(
        start_rate=0,
        stages=(Stage("60s", 100), Stage("30s", 100), Stage("20s", 10), Stage(0, 500), Stage(5, 0)),
    )
    # 0->100 over 60 s: 3000; hold 100 for 30 s: 3000; 100->10 over 20 s: 1100; 500->0 in 5 s: 1250
    analytic = 3000 + 3000 + 1100 + 1250
    arrivals = list(executor.arrivals())
    assert abs(len(arrivals) - analytic) <= 1
    assert arrivals == sorted(arrivals)
    for until in (7.3, 60.0, 61.7, 95.5, 111.2):
        expected = integral(executor, until)
        assert abs(len(list(executor.arrivals(until))) - expected) <= 1


def test_ramp_arrival_k_lands_where_the_integral_reaches_k() -> None:
    executor = RampingArrivalRate(start_rate=0, stages=(Stage(10, 100),))  # rate = 10 t
    arrivals = list(executor.arrivals())
    assert len(arrivals) == 500
    for k in (1, 2, 250, 499):
        assert arrivals[k] == pytest.approx(math.sqrt(k / 5), abs=1e-12)  # 5 t^2 = k


def test_ramping_rate_is_linear_between_stages() -> None:
    executor = RampingArrivalRate(start_rate=60, time_unit="1m", stages=(Stage(10, 660),))
    assert executor.rate_at(0) == 1.0
    assert executor.rate_at(5) == pytest.approx(6.0)
    assert executor.rate_at(10) == 0.0
    assert executor.total_duration == 10


def test_ramping_vus_follow_the_stages() -> None:
    executor = RampingVUs(
        start_vus=5, stages=(Stage(10, 15), Stage(20, 15), Stage(10, 0), Stage(0, 8), Stage(5, 8))
    )
    assert executor.total_duration == 45
    assert [executor.vus_at(t) for t in (0, 2.5, 5, 9.99, 10, 29.9)] == [5, 7, 10, 14, 15, 15]
    assert [executor.vus_at(t) for t in (30, 35, 39.99, 40, 44.9)] == [15, 7, 0, 8, 8]
    assert executor.vus_at(45) == 0
    assert executor.vus_at(-1) == 0


def test_constant_vus_hold_for_the_duration() -> None:
    executor = ConstantVUs(3, "1m")
    assert (executor.vus_at(0), executor.vus_at(59.9), executor.vus_at(60)) == (3, 3, 0)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ConstantVUs(0, "1s"), "vus"),
        (lambda: ConstantVUs(1, "0s"), "duration"),
        (lambda: RampingVUs(0, ()), "stages"),
        (lambda: RampingVUs(0, (Stage(5, 1.5),)), "stages[0].target"),
        (lambda: ConstantArrivalRate(rate=0, duration=1), "rate"),
        (lambda: ConstantArrivalRate(rate=1, duration=1, max_vus=2), "max_vus"),
        (lambda: RampingArrivalRate(stages=(Stage("1x", 1),)), "duration"),
    ],
)
def test_executors_reject_bad_arguments_naming_the_field(build, field: str) -> None:
    with pytest.raises(ValueError) as caught:
        build()
    assert caught.value.field == field  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- steps


def test_templates_render_from_variables() -> None:
    assert render("/api/calls/{id}?u={user}&x={missing}", {"id": 17, "user": "ann"}) == (
        "/api/calls/17?u=ann&x={missing}"
    )
    body = {"id": "{id}", "label": "call {id}", "tags": ["{user}"], "n": 1, "raw": '{"a": 1}'}
    assert render_json(body, {"id": 17, "user": "ann"}) == {
        "id": 17,
        "label": "call 17",
        "tags": ["ann"],
        "n": 1,
        "raw": '{"a": 1}',
    }


def test_json_paths_parse() -> None:
    assert parse_json_path("$.data[0].id") == ("data", 0, "id")
    assert parse_json_path("$") == ()
    assert parse_json_path("$['a b'][2]") == ("a b", 2)
    with pytest.raises(ValueError, match="position 6"):
        parse_json_path("$.data[x]")


def test_requests_group_under_their_template() -> None:
    assert Request("/api/calls/{id}").name == "/api/calls/{id}"
    assert Request("/api/calls", name="list-calls").name == "list-calls"
    assert Request("/x", method="post").method == "POST"


# ---------------------------------------------------------------------------------- YAML plans


def expected_full_plan(folder: Path, source: str) -> Plan:
    return Plan(
        scenarios=(
            Scenario(
                "browse",
                ConstantVUs(10, 90),
                (
                    Feed((folder / "users.csv").resolve(), "unique", ("username", "password")),
                    Request(
                        "/api/login",
                        "POST",
                        headers={"X-User": "{username}"},
                        json={"user": "{username}", "password": "{password}", "remember": True},
                        capture=(
                            Capture("token", json="$.token"),
                            Capture("request_id", header="X-Request-Id"),
                        ),
                        check=Check(status=(200, 201)),
                    ),
                    Request(
                        "/api/calls",
                        name="list-calls",
                        headers={"Authorization": "Bearer {token}"},
                        capture=(Capture("id", json="$.data[0].id"),),
                        check=Check(200, '"data"'),
                    ),
                    Request("/api/calls/{id}"),
                    Think(1, 3),
                ),
                tags={"team": "calls", "build": "7"},
            ),
            Scenario(
                "ramp",
                RampingVUs(2, (Stage(30, 20), Stage(60, 20), Stage(10, 0)), 5),
                (Request("/api/session", "DELETE"), Think(0.25, 0.25)),
                start_after=30,
            ),
            Scenario(
                "orders",
                ConstantArrivalRate(
                    rate=300, time_unit=60, duration=120, pre_allocated_vus=20, max_vus=200
                ),
                (
                    Feed((folder / "products.csv").resolve(), "sequential", ("sku",)),
                    Request(
                        "/api/orders",
                        "POST",
                        body="sku={sku}",
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    ),
                ),
            ),
            Scenario(
                "search",
                RampingArrivalRate(
                    start_rate=10, stages=(Stage(60, 100.5), Stage(0, 5), Stage(30, 5))
                ),
                (Request("/api/search?q=x"),),
            ),
        ),
        thresholds=("latency{name:list-calls}: p(95) < 200", "errors: rate < 0.01"),
        target="http://127.0.0.1:8000",
        source=source,
    )


def test_full_yaml_plan_loads_into_the_model(feeds: Path) -> None:
    path = write(feeds, "plan.yaml", FULL_PLAN)
    plan = load_plan(path)
    assert plan == expected_full_plan(feeds, str(path))
    assert plan.scenarios[2].executor.max_vus == 200
    assert plan.scenarios[3].executor.max_vus == 1000
    assert plan.total_duration == 130


def test_full_yaml_plan_round_trips_through_dump(feeds: Path) -> None:
    plan = load_plan(write(feeds, "plan.yaml", FULL_PLAN))
    again_path = write(feeds, "again.yml", dump_plan(plan))
    again = load_plan(again_path)
    assert again == Plan(plan.scenarios, plan.thresholds, plan.target, str(again_path))


def test_docs_example_is_a_valid_plan(tmp_path: Path) -> None:
    text = DOCS.read_text()
    section = text[text.index("## Plan reference") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    (tmp_path / "users.csv").write_text("username,password\nann,pw\n")
    plan = load_plan(write(tmp_path, "plan.yaml", example.group(1)))
    assert {type(s.executor) for s in plan.scenarios} == {
        ConstantVUs,
        RampingVUs,
        ConstantArrivalRate,
        RampingArrivalRate,
    }


def test_invalid_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          browse:
            executor: constant-vus
            vus: [10
            duration: 30s
        """,
    )
    assert err.line == 5
    assert err.field is None
    assert str(err).startswith(f"{err.file}:5: invalid YAML: ")


def test_unknown_executor_names_line_and_field(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        target: http://localhost
        scenarios:
          browse:
            executor: constant-vu
            vus: 10
            duration: 30s
            flow: [{get: /}]
        """,
    )
    assert str(err) == (
        f"{err.file}:4: scenarios.browse.executor: unknown executor 'constant-vu' (expected one"
        " of: constant-vus, ramping-vus, constant-arrival-rate, ramping-arrival-rate)"
    )
    assert isinstance(err, RedlineError)


def test_unknown_field_suggests_the_close_one(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          browse:
            executor: constant-vus
            vus: 10
            durration: 30s
            flow: [{get: /}]
        """,
    )
    assert where(err) == (5, "scenarios.browse.durration")
    assert "unknown field; did you mean 'duration'?" in err.message


def test_field_of_another_executor_is_named_as_such(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          browse:
            executor: constant-vus
            vus: 10
            duration: 30s
            rate: 5
            flow: [{get: /}]
        """,
    )
    assert where(err) == (6, "scenarios.browse.rate")
    assert err.message.startswith("not a field of executor constant-vus")


def test_unknown_top_level_and_step_fields(tmp_path: Path) -> None:
    err = plan_error(tmp_path, "scenario: {}\n")
    assert where(err) == (1, "scenario")
    assert "did you mean 'scenarios'?" in err.message
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          browse:
            executor: constant-vus
            vus: 1
            duration: 1s
            flow:
              - get: /
              - request:
                  url: /x
                  chek: {status: 200}
        """,
    )
    assert where(err) == (10, "scenarios.browse.flow[1].request.chek")
    assert "did you mean 'check'?" in err.message


def test_wrong_type_names_line_and_field(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          browse:
            executor: constant-vus
            vus: ten
            duration: 30s
            flow: [{get: /}]
        """,
    )
    message = "scenarios.browse.vus: expected an integer, got a string 'ten'"
    assert str(err) == f"{err.file}:4: {message}"


def test_wrong_type_deep_in_a_step(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          browse:
            executor: constant-vus
            vus: 1
            duration: 1s
            flow:
              - request:
                  url: /x
                  check:
                    status: [200, "ok"]
        """,
    )
    assert where(err) == (10, "scenarios.browse.flow[0].request.check.status[1]")


def test_bad_duration_names_line_and_field(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          up:
            executor: ramping-vus
            stages:
              - {duration: 10s, target: 5}
              - {duration: 5mins, target: 5}
            flow: [{get: /}]
        """,
    )
    assert where(err) == (6, "scenarios.up.stages[1].duration")
    assert err.message.startswith("bad duration '5mins'")


def test_missing_required_field_points_at_its_parent(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        target: http://localhost

        scenarios:
          open:
            executor: constant-arrival-rate
            duration: 30s
            flow: [{get: /}]
        """,
    )
    assert str(err) == f"{err.file}:4: scenarios.open.rate: missing required field"
    err = plan_error(tmp_path, "thresholds: []\n")
    assert where(err) == (1, "scenarios")


def test_missing_flow_and_executor(tmp_path: Path) -> None:
    err = plan_error(tmp_path, "scenarios:\n  a:\n    vus: 1\n")
    assert where(err) == (2, "scenarios.a.executor")
    err = plan_error(
        tmp_path, "scenarios:\n  a:\n    executor: constant-vus\n    vus: 1\n    duration: 1s\n"
    )
    assert where(err) == (2, "scenarios.a.flow")


def test_invalid_values_name_line_and_field(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          open:
            executor: constant-arrival-rate
            rate: 10
            duration: 30s
            pre_allocated_vus: 50
            max_vus: 20
            flow: [{get: /}]
        """,
    )
    assert where(err) == (7, "scenarios.open.max_vus")
    assert err.message == "must be at least pre_allocated_vus (50)"


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          a:
            executor: constant-vus
            vus: 1
            vus: 2
        """,
    )
    assert where(err) == (5, "scenarios.a.vus")
    assert err.message == "duplicate key (first on line 4)"


def test_undefined_variable_is_an_error(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          a:
            executor: constant-vus
            vus: 1
            duration: 1s
            flow:
              - request:
                  url: /api/calls
                  capture: {call_id: {json: "$.id"}}
              - get: /api/calls/{callid}
        """,
    )
    assert where(err) == (10, "scenarios.a.flow[1].get")
    assert err.message.startswith("unknown variable 'callid'")
    assert "defined: call_id" in err.message


def test_feed_errors(tmp_path: Path) -> None:
    base = """\
        scenarios:
          a:
            executor: constant-vus
            vus: 1
            duration: 1s
            flow:
              - feed: {file: %s, mode: %s}
        """
    err = plan_error(tmp_path, base % ("nope.csv", "sequential"))
    assert where(err) == (7, "scenarios.a.flow[0].feed.file")
    assert "cannot read 'nope.csv'" in err.message
    (tmp_path / "u.csv").write_text("user\nann\n")
    err = plan_error(tmp_path, base % ("u.csv", "shuffled"))
    assert where(err) == (7, "scenarios.a.flow[0].feed.mode")
    assert err.message == "unknown mode 'shuffled' (expected one of: sequential, random, unique)"


def test_bad_capture_and_think(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          a:
            executor: constant-vus
            vus: 1
            duration: 1s
            flow:
              - request:
                  url: /x
                  capture:
                    id: {json: "data.id"}
        """,
    )
    assert where(err) == (10, "scenarios.a.flow[0].request.capture.id.json")
    err = plan_error(
        tmp_path,
        """\
        scenarios:
          a:
            executor: constant-vus
            vus: 1
            duration: 1s
            flow:
              - think: 3-1
        """,
    )
    assert where(err) == (7, "scenarios.a.flow[0].think")


def test_unknown_plan_type_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"plan\.json: unknown plan type"):
        load_plan(tmp_path / "plan.json")
    with pytest.raises(PlanError, match=r"missing\.yaml: cannot read the plan"):
        load_plan(tmp_path / "missing.yaml")


def test_empty_plan_is_an_error(tmp_path: Path) -> None:
    err = plan_error(tmp_path, "# nothing\n")
    assert err.line == 1
    assert "empty" in err.message


# ---------------------------------------------------------------------------------- Python plans


def test_python_plan_with_decorated_functions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plan.py",
        """\
        from redline.load._plan import ConstantVUs, RampingArrivalRate, Stage, scenario

        TARGET = "http://127.0.0.1:8000"
        THRESHOLDS = ["errors: rate < 0.01"]


        @scenario(executor=ConstantVUs(10, "30s"), tags={"team": "calls"})
        async def browse(vu):
            r = await vu.get("/api/calls", name="list-calls")
            vu.check(r, status=200)


        @scenario(RampingArrivalRate(stages=[Stage("1m", 50)]), name="open", start_after="10s")
        async def hammer(vu):
            await vu.get("/")


        async def helper(vu):
            pass
        """,
    )
    plan = load_plan(path)
    assert [s.name for s in plan.scenarios] == ["browse", "open"]
    browse, hammer = plan.scenarios
    assert browse.executor == ConstantVUs(10, 30)
    assert browse.tags == {"team": "calls"}
    assert browse.flow.__name__ == "browse"  # type: ignore[union-attr]
    assert hammer.start_after == 10.0
    assert plan.thresholds == ("errors: rate < 0.01",)
    assert plan.target == "http://127.0.0.1:8000"
    assert plan.source == str(path)


def test_python_plan_with_scenarios_dict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plan.py",
        """\
        from redline.load._plan import ConstantArrivalRate, Request, Think

        async def browse(vu):
            await vu.get("/")

        SCENARIOS = {
            "browse": {"executor": ConstantArrivalRate(rate=50, duration="1m"), "flow": browse},
            "steps": {
                "executor": ConstantArrivalRate(rate=5, duration=10),
                "flow": [Request("/a"), Think(1, 2)],
                "tags": {"kind": "declarative"},
            },
        }
        """,
    )
    plan = load_plan(path)
    assert [s.name for s in plan.scenarios] == ["browse", "steps"]
    assert plan.scenarios[1].flow == (Request("/a"), Think(1, 2))
    assert plan.thresholds == ()
    assert plan.target is None


def test_python_plan_errors_name_the_function_line(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        from redline.load._plan import ConstantVUs, scenario


        @scenario(ConstantVUs(1, 1))
        def browse(vu):
            pass
        """,
        "plan.py",
    )
    assert where(err) == (4, "browse.flow")
    assert "expected an async function" in err.message


def test_python_plan_errors_name_the_assignment_line(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        async def browse(vu):
            pass


        SCENARIOS = {
            "browse": {"executor": "constant-vus", "flow": browse},
        }
        """,
        "plan.py",
    )
    assert where(err) == (5, "SCENARIOS.browse.executor")
    err = plan_error(tmp_path, 'SCENARIOS = {"a": {"exector": 1}}\n', "plan.py")
    assert where(err) == (1, "SCENARIOS.a.exector")
    assert "did you mean 'executor'?" in err.message


def test_python_plan_bad_executor_argument_names_the_line(tmp_path: Path) -> None:
    err = plan_error(
        tmp_path,
        """\
        from redline.load._plan import ConstantVUs, scenario

        @scenario(ConstantVUs(10, "30 seconds"))
        async def browse(vu):
            pass
        """,
        "plan.py",
    )
    assert where(err) == (3, "duration")
    assert err.message.startswith("bad duration '30 seconds'")


def test_python_plan_syntax_and_runtime_errors(tmp_path: Path) -> None:
    err = plan_error(tmp_path, "x = 1\nasync def browse(vu)\n    pass\n", "plan.py")
    assert err.line == 2
    assert err.message.startswith("invalid Python")
    err = plan_error(tmp_path, "x = 1\ny = 1 / 0\n", "plan.py")
    assert err.line == 2
    assert err.message == "ZeroDivisionError: division by zero"
    err = plan_error(tmp_path, "x = 1\n", "plan.py")
    assert err.message.startswith("no scenarios")


def test_python_flow_cannot_be_dumped_as_yaml(tmp_path: Path) -> None:
    async def browse(vu: object) -> None:
        pass

    plan = Plan((Scenario("b", ConstantVUs(1, 1), browse),))
    with pytest.raises(PlanError, match="scenarios.b.flow"):
        dump_plan(plan)


# ---------------------------------------------------------------------------------- presets


def one(executor, start_after: float = 0.0) -> Plan:
    return Plan((Scenario("s", executor, (Request("/"),), start_after),), ("rps > 1",), None, "p")


def reshaped(executor, preset: str, **options):
    return apply_preset(one(executor), preset, **options).scenarios[0].executor


def test_load_preset_changes_nothing() -> None:
    plan = one(ConstantVUs(10, 60))
    assert apply_preset(plan, "load") is plan


def test_stress_steps_vus_to_four_times_the_load() -> None:
    plan = apply_preset(one(ConstantVUs(10, 80), start_after=5), "stress")
    executor = plan.scenarios[0].executor
    assert isinstance(executor, RampingVUs)
    assert executor.total_duration == pytest.approx(80)
    assert [executor.vus_at(t) for t in (0, 10, 30, 50, 70, 79.9)] == [10, 10, 20, 30, 40, 40]
    assert plan.scenarios[0].start_after == 5
    assert plan.thresholds == ("rps > 1",)


def test_stress_steps_an_arrival_rate() -> None:
    executor = reshaped(
        ConstantArrivalRate(rate=100, duration="4m", max_vus=100), "stress", steps=2
    )
    assert isinstance(executor, RampingArrivalRate)
    assert [executor.rate_at(t) for t in (60, 180)] == pytest.approx([100, 200])
    assert executor.max_vus == 200


def test_spike_jumps_to_fifty_times_and_back() -> None:
    executor = reshaped(ConstantArrivalRate(rate=10, duration=100), "spike")
    assert executor.total_duration == pytest.approx(100)
    rates = [executor.rate_at(t) for t in (0, 24.9, 25, 34.9, 35, 99)]
    assert rates == pytest.approx([10, 10, 500, 500, 10, 10])
    arrivals = list(executor.arrivals())
    assert abs(len(arrivals) - (90 * 10 + 10 * 500)) <= 1


def test_spike_options_and_vus() -> None:
    executor = reshaped(ConstantVUs(2, 60), "spike", factor=5, hold="6s")
    assert [executor.vus_at(t) for t in (0, 15, 20.9, 21, 59)] == [2, 10, 10, 2, 2]


def test_soak_holds_the_peak_for_thirty_minutes() -> None:
    ramp = RampingVUs(0, (Stage(10, 40), Stage(10, 0)))
    assert reshaped(ramp, "soak") == ConstantVUs(40, 1800)
    rate = RampingArrivalRate(start_rate=5, time_unit=60, stages=(Stage(60, 30),))
    assert reshaped(rate, "soak", duration="2h") == ConstantArrivalRate(
        rate=30, time_unit=60, duration=7200
    )


def test_breakpoint_ramps_the_rate_until_the_end() -> None:
    executor = reshaped(
        ConstantArrivalRate(rate=100, duration="10m"), "breakpoint", factor=20, duration="20m"
    )
    assert isinstance(executor, RampingArrivalRate)
    assert executor.rate_at(0) == 100
    assert executor.rate_at(600) == pytest.approx(1050)
    assert executor.rate_at(1199.999) == pytest.approx(2000, rel=1e-5)
    assert executor.total_duration == 1200


def test_presets_reject_unknown_names_and_options() -> None:
    plan = one(ConstantVUs(1, 1))
    with pytest.raises(PlanError, match="unknown preset 'stres'; did you mean 'stress'"):
        apply_preset(plan, "stres")
    with pytest.raises(PlanError, match="unknown option.*factr"):
        apply_preset(plan, "spike", factr=3)
    with pytest.raises(PlanError, match="hold"):
        apply_preset(plan, "spike", hold="5s")


def test_breakpoint_on_a_closed_model_ramps_users() -> None:
    executor = reshaped(RampingVUs(0, (Stage(10, 8), Stage(50, 8))), "breakpoint")
    assert isinstance(executor, RampingVUs)
    assert [executor.vus_at(t) for t in (0, 30, 59.99)] == [8, 44, 79]


def test_spike_records_its_phases_offset_by_the_scenario_start() -> None:
    plan = apply_preset(one(ConstantArrivalRate(rate=10, duration=100), start_after=5), "spike")
    assert plan.preset == Preset(
        "spike",
        "s",
        {"factor": 50, "hold": 10.0, "duration": 100.0},
        {"before": (5.0, 30.0), "spike": (30.0, 40.0), "after": (40.0, 105.0)},
    )


def test_preset_windows_follow_the_longest_scenario_the_first_of_equals() -> None:
    short = Scenario("short", ConstantVUs(2, 10), (Request("/"),))
    long = Scenario("long", ConstantVUs(2, 40), (Request("/"),), start_after=2)
    plan = apply_preset(Plan((short, long)), "spike", factor=3, hold=4)
    assert plan.preset is not None
    assert plan.preset.scenario == "long"
    assert plan.preset.windows == {
        "before": (2.0, 12.0),
        "spike": (12.0, 16.0),
        "after": (16.0, 42.0),
    }
    twins = apply_preset(Plan((short, long)), "soak", duration="1m")
    assert twins.preset == Preset("soak", "short", {"duration": 60.0}, {"hold": (0.0, 60.0)})


def test_breakpoint_and_stress_record_their_ramp_and_steps() -> None:
    plan = apply_preset(one(ConstantArrivalRate(rate=100, duration="10m")), "breakpoint")
    assert plan.preset == Preset(
        "breakpoint", "s", {"factor": 10, "duration": 600.0}, {"ramp": (0.0, 600.0)}
    )
    stress = apply_preset(one(ConstantVUs(10, 80)), "stress", steps=2)
    assert stress.preset is not None
    assert stress.preset.windows == {"1x": (0.0, 40.0), "2x": (40.0, 80.0)}


def test_a_plan_as_written_has_no_preset() -> None:
    plan = one(ConstantVUs(1, 1))
    assert plan.preset is None
    assert apply_preset(plan, "load").preset is None


def test_yaml_thresholds_take_the_dict_form_with_abort_on_fail(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 1s\n"
        "    flow:\n      - get: /\n"
        "thresholds:\n"
        '  - "latency: p(95) < 200"\n'
        '  - threshold: "errors: rate < 0.01"\n'
        "    abort_on_fail: true\n"
        "    delay_abort_eval: 1m30s\n"
    )

    loaded = load_plan(plan)

    assert loaded.thresholds[1] == {
        "threshold": "errors: rate < 0.01",
        "abort_on_fail": True,
        "delay_abort_eval": "1m30s",
    }


def test_a_bad_threshold_fails_at_load_naming_file_line_and_index(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 1s\n"
        "    flow:\n      - get: /\n"
        "thresholds:\n"
        '  - "latency: p(95) < 200"\n'
        '  - "latency < 200"\n'
    )

    with pytest.raises(PlanError) as caught:
        load_plan(plan)

    assert caught.value.line == 10
    assert "thresholds[1]" in str(caught.value)


def test_a_full_url_in_a_request_is_refused_with_a_hint(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 1s\n"
        "    flow:\n      - get: http://other.example/x\n"
    )

    with pytest.raises(PlanError, match="full URL"):
        load_plan(plan)


def test_python_plans_import_everything_from_the_public_package(tmp_path):
    plan = tmp_path / "plan.py"
    plan.write_text(
        "from redline.load import ConstantVUs, scenario\n\n"
        "THRESHOLDS = ['latency: p(95) < 200']\n\n"
        "@scenario(executor=ConstantVUs(vus=10, duration=30))\n"
        "async def browse(vu):\n"
        "    response = await vu.get('/api/calls', name='list-calls')\n"
        "    vu.check(response, status=200)\n"
    )

    loaded = load_plan(plan)

    (only,) = loaded.scenarios
    assert only.name == "browse" and only.executor.vus == 10
    assert loaded.thresholds == ("latency: p(95) < 200",)
