"""The targets both platforms wrote down and never measured, checked against a demo run.

Each step of ``redline demo`` leaves one row of figures (``StepResult.figures``). A target
reads the row of the step it is about: the full configuration (``http``, every layer on) for
latency, errors and the cache, the ``users`` step for 1000 concurrent users, and the baseline
beside the full configuration for the throughput gain. A target whose step did not run (under
``--only``) or whose figure could not be measured is ``skipped``: it neither passes nor fails,
and the report says why.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FULL = "http"
BASELINE = "baseline"
USERS = "users"

Figures = Mapping[str, Any]


@dataclass(frozen=True)
class Target:
    """One row of the seeds' target table: what is measured, on which step, and the bound."""

    name: str
    step: str
    figure: str  # key in the step's figures, or a callable's name below
    op: str  # "<" or ">="/">"
    bound: float
    unit: str  # how the value and bound are shown: "ms", "%", "x", "users"
    source: str  # where the seeds stated it

    def check(self, results: Mapping[str, Figures]) -> dict[str, Any]:
        value, why = self.measure(results)
        row: dict[str, Any] = {
            "target": self.name,
            "step": self.step,
            "expected": f"{self.op} {_show(self.bound, self.unit)}",
            "value": value,
            "shown": _show(value, self.unit) if value is not None else "–",
            "unit": self.unit,
        }
        if value is None:
            row.update(status="skipped", why=why)
        else:
            row["status"] = "pass" if _OPS[self.op](value, self.bound) else "fail"
            if why:
                row["why"] = why
        return row

    def measure(self, results: Mapping[str, Figures]) -> tuple[float | None, str]:
        if self.figure in _DERIVED:
            return _DERIVED[self.figure](results)
        row = results.get(self.step)
        if row is None:
            return None, f"step {self.step!r} did not run"
        value = row.get(self.figure)
        if value is None:
            return None, f"{self.figure} was not measured in step {self.step!r}"
        return float(value), ""


def _read_gain(results: Mapping[str, Figures]) -> tuple[float | None, str]:
    base, full = results.get(BASELINE), results.get(FULL)
    if base is None or full is None:
        return None, "needs both the baseline and the full configuration (http) steps"
    if not base.get("read_rps"):
        return None, "the baseline completed no read requests"
    return full["read_rps"] / base["read_rps"], ""


def _users_held(results: Mapping[str, Figures]) -> tuple[float | None, str]:
    row = results.get(USERS)
    if row is None:
        return None, f"step {USERS!r} did not run"
    # Held: every user was running, and the service kept its error and latency targets
    # over the hold; otherwise none of them counts as held, and the reason says why.
    reached = float(row.get("vus_reached") or 0)
    p95, errors = row.get("p95_ms"), row.get("error_rate")
    broken = []
    if p95 is None or p95 >= 200:
        broken.append(f"p95 {p95:.3g} ms >= 200 ms" if p95 is not None else "no p95")
    if errors is None or errors >= 0.001:
        broken.append(f"errors {errors:.2%} >= 0.1 %" if errors is not None else "no error rate")
    if broken:
        return 0.0, f"{reached:,.0f} users ran, but " + " and ".join(broken)
    return reached, ""


_DERIVED: dict[str, Callable[[Mapping[str, Figures]], tuple[float | None, str]]] = {
    "read_gain": _read_gain,
    "users_held": _users_held,
}
_OPS = {"<": operator.lt, ">": operator.gt, ">=": operator.ge}


def _show(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.3g} %"
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "users":
        return f"{value:,.0f}"
    return f"{value:.3g} {unit}"


TARGETS: tuple[Target, ...] = (
    Target("Read-mix throughput vs baseline", FULL, "read_gain", ">=", 10, "x", "issue 6"),
    Target("API p50", FULL, "p50_ms", "<", 100, "ms", "both platforms"),
    Target("API p95", FULL, "p95_ms", "<", 200, "ms", "both platforms"),
    Target("API p99", FULL, "p99_ms", "<", 500, "ms", "both platforms"),
    Target("Database query p95", FULL, "db_query_p95_ms", "<", 50, "ms", "both platforms"),
    # Requests, not lookups: with two layers a lookup ratio counts some requests twice (_reads).
    Target("Cache hit rate", FULL, "reads_from_cache", ">", 0.80, "%", "both platforms"),
    Target("Error rate", FULL, "error_rate", "<", 0.001, "%", "both platforms"),
    Target("Index hit ratio", FULL, "index_hit_ratio", ">", 0.95, "%", "capital-calls platform"),
    Target("Concurrent users held", USERS, "users_held", ">=", 1000, "users", "both platforms"),
)


def check_targets(
    results: Mapping[str, Figures], targets: tuple[Target, ...] = TARGETS
) -> list[dict[str, Any]]:
    """Every target's row: value, expected, and ``pass``, ``fail`` or ``skipped``."""
    return [target.check(results) for target in targets]
