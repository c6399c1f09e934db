"""The answers the spike, soak and breakpoint presets ask of a run, beyond its thresholds.

- spike: how long after the spike the target behaved as before it again;
- soak: whether latency or the server's memory degraded over the long hold;
- breakpoint: what broke and when, and the highest load that was sustained before.

Each verdict reads the windows ``apply_preset`` recorded on the plan (``Plan.preset``), the
per-second ``timeseries`` of the summary and, for latency over a window, the exact histogram
of its seconds (``Recorder.window``): a percentile of a window is never an average of
per-second percentiles. A second ``s`` of the run is ``[s, s + 1)``; a window uses only the
seconds that lie wholly inside it, so phases are told apart to the second.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from dataclasses import dataclass
from typing import Any

from redline.load._metrics import Recorder, percentiles
from redline.load._plan import Plan, Preset


@dataclass(frozen=True)
class Rules:
    """The numbers the verdicts judge by, each with its default."""

    # Whole seconds skipped at the start of the spike's baseline and of the soak, while
    # connections open and caches fill.
    warmup_s: int = 1
    # Spike: a second is back to normal when its p95 is within
    # max(recovery_factor x baseline p95, baseline p95 + recovery_margin_ms) ...
    recovery_factor: float = 1.5
    recovery_margin_ms: float = 5.0
    # ... its rps within rps_tolerance of the baseline's (at least 1 request/s either way),
    # and it has no more errors or dropped arrivals than the baseline's worst second;
    rps_tolerance: float = 0.1
    # recovered once that holds for recovery_hold_s seconds in a row.
    recovery_hold_s: int = 3
    # Soak: the early and late windows are each this share of the hold after the warm-up
    # (at least a second) ...
    soak_window: float = 0.1
    # ... and the soak degraded when late p95 / early p95 exceeds max_p95_ratio, or when the
    # server's memory grew by more than max_memory_growth of what it started at.
    max_p95_ratio: float = 1.25
    max_memory_growth: float = 0.1
    # Breakpoint: a second sustained its target when it completed at least this share of the
    # target rate and dropped no arrival.
    sustained: float = 0.9


def verdicts(
    plan: Plan, recorder: Recorder, summary: dict[str, Any], rules: Rules | None = None
) -> dict[str, Any]:
    """``{preset: verdict}`` for a spike, soak or breakpoint run; ``{}`` for any other."""
    preset, rules = plan.preset, rules or Rules()
    if preset is None:
        return {}
    if preset.name == "spike":
        return {"spike": _spike(preset, recorder, summary, rules)}
    if preset.name == "soak":
        return {"soak": _soak(preset, recorder, summary, rules)}
    if preset.name == "breakpoint":
        lead = next(s for s in plan.scenarios if s.name == preset.scenario)
        return {"breakpoint": _breakpoint(preset, summary, rules, lead.executor.open_model)}
    return {}


def _spike(
    preset: Preset, recorder: Recorder, summary: dict[str, Any], rules: Rules
) -> dict[str, Any]:
    """Baseline and spike p95, and the seconds from the spike's end until the target is back
    to its baseline (see ``Rules``); ``recovered`` is None when there was no baseline."""
    end = summary["duration_s"]
    rows = _rows(summary)
    before, after = preset.windows["before"], preset.windows["after"]
    spike_start, spike_end = preset.windows["spike"]
    baseline = _inside(before[0] + rules.warmup_s, min(before[1], end))
    base_rows = [rows[s] for s in baseline if s in rows]
    base_p95 = _p95_ms(recorder, baseline)
    spike_seconds = range(math.floor(spike_start), math.ceil(spike_end - 1e-9))
    out: dict[str, Any] = {
        "baseline_p95_ms": base_p95,
        "baseline_rps": None,
        "limit_p95_ms": None,
        "spike_p95_ms": _p95_ms(recorder, spike_seconds),
        "peak_p95_ms": None,
        "recovered": None,
        "recovered_at_s": None,
        "recovery_s": None,
    }
    if base_p95 is None or not base_rows:
        out["note"] = "no requests in a whole second before the spike, after the warm-up"
        return out
    limit = max(rules.recovery_factor * base_p95, base_p95 + rules.recovery_margin_ms)
    base_rps = sum(row["rps"] for row in base_rows) / len(base_rows)
    slack = max(rules.rps_tolerance * base_rps, 1.0)
    worst_errors = max(row["errors"] for row in base_rows)
    worst_dropped = max(row["dropped"] for row in base_rows)

    def normal(row: dict[str, Any] | None) -> bool:
        return (
            row is not None
            and row["p95"] is not None
            and row["p95"] <= limit
            and abs(row["rps"] - base_rps) <= slack
            and row["errors"] <= worst_errors
            and row["dropped"] <= worst_dropped
        )

    after_seconds = _inside(spike_end, min(after[1], end))
    recovered_at, streak = None, 0
    for second in after_seconds:
        streak = streak + 1 if normal(rows.get(second)) else 0
        if streak == rules.recovery_hold_s:
            recovered_at = second - streak + 1
            break
    stop = recovered_at if recovered_at is not None else after_seconds.stop
    troubled = [rows[s]["p95"] for s in range(spike_seconds.start, stop) if s in rows]
    out.update(
        baseline_rps=base_rps,
        limit_p95_ms=limit,
        peak_p95_ms=max((p for p in troubled if p is not None), default=None),
        recovered=recovered_at is not None,
        recovered_at_s=recovered_at,
        recovery_s=None if recovered_at is None else round(recovered_at - spike_end, 6),
    )
    return out


def _soak(
    preset: Preset, recorder: Recorder, summary: dict[str, Any], rules: Rules
) -> dict[str, Any]:
    """Early against late p95 over the hold, and the slope of the server's memory."""
    start, end = preset.windows["hold"]
    seconds = _inside(start + rules.warmup_s, min(end, summary["duration_s"]))
    out: dict[str, Any] = {
        "early_window_s": None,
        "late_window_s": None,
        "early_p95_ms": None,
        "late_p95_ms": None,
        "ratio": None,
    }
    reasons = []
    if len(seconds) >= 2:
        width = max(1, int(len(seconds) * rules.soak_window))
        early = seconds[:width]
        late = seconds[-width:]
        early_p95, late_p95 = _p95_ms(recorder, early), _p95_ms(recorder, late)
        ratio = late_p95 / early_p95 if early_p95 and late_p95 is not None else None
        out.update(
            early_window_s=[early.start, early.stop],
            late_window_s=[late.start, late.stop],
            early_p95_ms=early_p95,
            late_p95_ms=late_p95,
            ratio=ratio,
        )
        if ratio is not None and ratio > rules.max_p95_ratio:
            reasons.append(f"late p95 is {ratio:.2f}x the early p95 (> {rules.max_p95_ratio}x)")
    memory = _memory_series(summary.get("server") or {})
    slope = growth = None
    if memory is not None:
        key, values = memory
        with contextlib.suppress(statistics.StatisticsError):  # every sample at one time
            fit = statistics.linear_regression([t for t, _ in values], [v for _, v in values])
            slope, at_start = fit.slope, fit.intercept + fit.slope * values[0][0]
            growth = slope * (values[-1][0] - values[0][0])
            if at_start > 0 and growth > rules.max_memory_growth * at_start:
                reasons.append(
                    f"{key} grew {growth / at_start:.0%} over the run"
                    f" (> {rules.max_memory_growth:.0%})"
                )
    out.update(
        memory_series=memory[0] if memory is not None and slope is not None else None,
        memory_slope_bytes_per_s=slope,
        memory_growth_bytes=growth,
        degraded=bool(reasons),
        reasons=reasons,
    )
    return out


def _breakpoint(
    preset: Preset, summary: dict[str, Any], rules: Rules, open_model: bool
) -> dict[str, Any]:
    """What broke and when (``summary["aborted"]``, set by the runner when a threshold stopped
    the run) and the highest target sustained before it.

    In the open model the target of a second is its arrival rate in the timeseries, and it
    was sustained when the second completed at least ``rules.sustained`` of it and dropped no
    arrival. In the closed model the target is the users, who slow down with the server, so
    a second whose users completed requests counts. Only whole seconds of the ramp that end
    before the run broke are judged; ``highest_rate`` is the highest target reached at all.
    """
    aborted = summary.get("aborted")
    start, end = preset.windows["ramp"]
    stop = min(end, summary["duration_s"])
    if aborted is not None:
        stop = min(stop, aborted["at_s"])
    rows = _rows(summary)
    column = "rate" if open_model else "vus"
    reached = [
        rows[s][column]
        for s in range(math.floor(start), math.ceil(stop - 1e-9))
        if s in rows and rows[s][column] is not None
    ]
    sustained = []
    for second in _inside(start, stop):
        row = rows.get(second)
        if row is None or row[column] is None:
            continue
        if open_model:
            target = row["rate"]
            if target > 0 and row["rps"] >= rules.sustained * target and not row["dropped"]:
                sustained.append(target)
        elif row["vus"] and row["rps"] > 0:
            sustained.append(row["vus"])
    return {
        "broke": aborted is not None,
        "broke_at_s": aborted["at_s"] if aborted is not None else None,
        "broken_by": list(aborted["by"]) if aborted is not None else [],
        "highest_sustained_rate": max(sustained, default=None),
        "highest_rate": max(reached, default=None),
        "unit": "req/s" if open_model else "vus",
    }


def _inside(start: float, end: float) -> range:
    """The whole seconds ``s`` with ``[s, s + 1)`` inside ``[start, end)``."""
    return range(math.ceil(start - 1e-9), max(math.floor(end + 1e-9), 0))


def _rows(summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["t"]: row for row in summary["timeseries"]}


def _p95_ms(recorder: Recorder, seconds: range) -> float | None:
    if not seconds:
        return None
    hist = recorder.window(seconds.start, seconds.stop - 1)
    if not hist.total_count:
        return None
    return percentiles(hist, (95.0,))[95.0] / 1000


def _memory_series(server: dict[str, Any]) -> tuple[str, list[list[float]]] | None:
    """The resident memory series scraped from the server, preferring the standard one."""
    names = {key: key.split("{", 1)[0] for key in sorted(server)}
    standard = [key for key, name in names.items() if name == "process_resident_memory_bytes"]
    other = [key for key, name in names.items() if name.endswith(("memory_bytes", "rss_bytes"))]
    for key in dict.fromkeys(standard + other):
        values = server[key].get("values") or []
        if len(values) >= 3:
            return key, sorted(values)
    return None
