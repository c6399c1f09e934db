"""Prometheus text exposition (format 0.0.4) of a registry or of a merged multi-process view.

Counters are ``<name>_total``; gauges are as named. A histogram is a classic Prometheus
histogram (``_bucket{le=...}`` cumulative, ``_sum``, ``_count``), which every Prometheus and
``histogram_quantile()`` understands, and its accurate quantiles follow as a separate family,
``<name>_quantiles``, typed ``summary``, with ``quantile="0.5|0.9|0.95|0.99|0.999"``:

- separate, because the text format allows only ``_bucket``, ``_sum`` and ``_count`` in a
  histogram family; a summary family is the standard carrier of ``quantile`` labels, and
  its own name keeps Prometheus from seeing two types under one name;
- without ``_sum`` and ``_count``, which would repeat the histogram's;
- computed from the HDR histogram of all samples since the process (or, merged, the worker
  set) started, within 1 % (see ``Histogram``). Like the counts, they are cumulative: for a
  windowed percentile use ``histogram_quantile(0.99, rate(x_bucket[5m]))``, or the
  quantiles' change over time.

Empty histograms export NaN quantiles, as summaries do. No ``_created`` series are exported.
"""

from __future__ import annotations

import math

from redline.monitor._registry import REGISTRY, Collector
from redline.monitor._snapshot import QUANTILES, MetricFamily

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


def generate_latest(source: Collector = REGISTRY) -> bytes:
    """The exposition of ``source`` (a ``Registry`` or a ``SnapshotDirectory``), UTF-8."""
    return format_families(source.collect()).encode("utf-8")


def format_families(families: list[MetricFamily]) -> str:
    """The exposition text of already collected families."""
    out: list[str] = []
    for family in families:
        if family.kind == "histogram":
            _histogram(out, family)
        else:
            _header(out, family.name, family.documentation, family.kind)
            names = family.labelnames
            for key, value in family.samples.items():
                out.append(f"{family.name}{_labels(names, key)} {_number(value)}\n")
    return "".join(out)


def _histogram(out: list[str], family: MetricFamily) -> None:
    name, names = family.name, family.labelnames
    _header(out, name, family.documentation, "histogram")
    bounds = [_number(bound) for bound in family.buckets]
    for key, value in family.samples.items():
        for bound, count in zip(bounds, value.bucket_counts, strict=True):
            out.append(f"{name}_bucket{_labels(names, key, ('le', bound))} {count}\n")
        labels = _labels(names, key)
        out.append(f"{name}_sum{labels} {_number(value.sum)}\n")
        out.append(f"{name}_count{labels} {value.count}\n")
    quantiles = f"{name}_quantiles"
    help_text = f"{family.documentation} (quantiles since start, from an HDR histogram)"
    _header(out, quantiles, help_text, "summary")
    for key, value in family.samples.items():
        for q, v in value.quantiles(QUANTILES).items():
            out.append(f"{quantiles}{_labels(names, key, ('quantile', repr(q)))} {_number(v)}\n")


def _header(out: list[str], name: str, documentation: str, kind: str) -> None:
    text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")


def _labels(
    names: tuple[str, ...], values: tuple[str, ...], extra: tuple[str, str] | None = None
) -> str:
    pairs = [*zip(names, values, strict=True), *([extra] if extra else [])]
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))
