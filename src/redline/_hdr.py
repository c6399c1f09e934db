"""HdrHistogram helpers shared by the load engine and the monitor: bulk recording, fast reads.

Both record many samples and want exact percentiles from a histogram that merges across
processes count by count. ``HdrHistogram.record_value`` is pure Python (~1.3 us a value), too
slow for a hot path, so callers buffer raw values and hand them over in bulk as a ``_Counted``,
a counts array laid out like hdrh's, which hdrh's own C ``add_array`` adds to a histogram:

- integers (the load engine's microseconds): counted by value with ``collections.Counter``
  (in C), then only the distinct values are turned into counts-array indices, with C-level
  ``map`` calls over precomputed shift tables;
- sorted floats and a scale (the monitor's seconds): the lower edge of every counts index,
  divided by the scale, is bisected into the sorted values, and consecutive positions are
  the counts; no per-value Python work at all.

The indices are exactly those ``record_value`` computes (for floats: of the value times the
scale, truncated), so every percentile is identical to hdrh's own, at 0.1-0.3 us a sample.

A histogram's layout is values ``0 .. highest`` at ``significant_figures`` decimal digits
(the lowest discernible value is always 1); tables are computed once per layout.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from ctypes import addressof
from functools import cache
from itertools import accumulate, repeat
from operator import add, rshift, sub

from hdrh.histogram import HdrHistogram
from pyhdrh import add_array

HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


def new_histogram(
    highest: int = HIGHEST_US, significant_figures: int = SIGNIFICANT_DIGITS
) -> HdrHistogram:
    """An empty histogram of values 1 .. ``highest`` (default: microseconds up to 1 h) at
    ``significant_figures`` digits (default 3: values within 0.1 %)."""
    return HdrHistogram(1, highest, significant_figures)


@cache
def _index_tables(highest: int, significant_figures: int) -> tuple[list[int], list[int]]:
    # hdrh's counts index of value v depends only on v's bit length L:
    #   bucket = max(L, m) - m  with m = bit length of sub_bucket_mask,
    #   index  = ((bucket + 1) << half_mag) - half_count + (v >> (bucket + unit_mag)).
    template = new_histogram(highest, significant_figures)
    mask_bits = template.sub_bucket_mask.bit_length()
    unit = template.unit_magnitude
    half_mag = template.sub_bucket_half_count_magnitude
    half = template.sub_bucket_half_count
    shifts, bases = [], []
    for bits in range(65):
        bucket = max(bits, mask_bits) - unit - (half_mag + 1)
        shifts.append(bucket + unit)
        bases.append(((bucket + 1) << half_mag) - half)
    return shifts, bases


@cache
def _edges(highest: int, significant_figures: int, scale: float) -> list[float]:
    # edges[k] is the lowest value of counts index k + 1, in units of 1 / scale.
    template = new_histogram(highest, significant_figures)
    last = template.get_counts_array_index(highest)
    return [template.get_value_from_index(index) / scale for index in range(1, last + 1)]


def _unit(value: float, scale: float, highest: int) -> int:
    # The largest integer u with u / scale <= value, within 0 .. highest.
    if not value > 0:
        return 0
    unit = int(min(value * scale, highest))
    if unit < highest and (unit + 1) / scale <= value:
        unit += 1
    elif unit and unit / scale > value:
        unit -= 1
    return unit


class _Counted:
    """Samples reduced to a counts array laid out like hdrh's (``counts[index]``).

    ``_Counted(values)`` takes integers, ``_Counted.of_sorted_floats`` sorted floats and a
    scale. Values outside ``0 .. highest`` are kept at the edge of the range: a clock step
    or a request older than the range is still one sample.
    """

    __slots__ = ("counts", "total", "low", "high")

    def __init__(
        self,
        values: Iterable[int],
        highest: int = HIGHEST_US,
        significant_figures: int = SIGNIFICANT_DIGITS,
    ) -> None:
        # Counting the raw values first (in C) leaves only distinct values to index.
        seen = Counter(values)
        distinct = list(seen)
        if min(distinct) < 0 or max(distinct) > highest:
            distinct = [min(max(v, 0), highest) for v in distinct]
        shifts, bases = _index_tables(highest, significant_figures)
        bits = list(map(int.bit_length, distinct))
        shifted = map(rshift, distinct, map(shifts.__getitem__, bits))
        indices = list(map(add, map(bases.__getitem__, bits), shifted))
        # Dense counts up to the highest index, so each histogram takes them in one C call.
        dense = [0] * (max(indices) + 1)
        for index, n in zip(indices, seen.values(), strict=True):
            dense[index] += n
        self.counts = array("Q", dense)
        self.total = seen.total()
        self.low, self.high = min(distinct), max(distinct)

    @classmethod
    def of_sorted_floats(
        cls, values: Sequence[float], scale: float, highest: int, significant_figures: int
    ) -> _Counted:
        """Sorted floats, each counted as the integer ``u`` with ``u / scale <= v < (u + 1) /
        scale`` (``v * scale`` truncated, without the product's rounding errors), NaN
        excluded (the caller drops them first).

        Sorted values need no per-value work: the lower edge of every counts index, divided
        by ``scale``, is bisected into them (one C-level ``map`` over the indices the values
        span), and consecutive positions give the counts.
        """
        n = len(values)
        edges = _edges(highest, significant_figures, scale)
        first = bisect_right(edges, values[0])
        last = bisect_right(edges, values[-1])
        positions = [0, *map(bisect_left, repeat(values), edges[first:last]), n]
        self = cls.__new__(cls)
        self.counts = array("Q", repeat(0, first))
        self.counts.extend(map(sub, positions[1:], positions[:-1]))
        self.total = n
        self.low = _unit(values[0], scale, highest)
        self.high = _unit(values[-1], scale, highest)
        return self

    def add_to(self, hist: HdrHistogram) -> None:
        address, length = self.counts.buffer_info()
        add_array(addressof(hist.counts), address, length, hist.word_size)
        hist.total_count += self.total
        if self.low < hist.min_value:
            hist.min_value = self.low
        if self.high > hist.max_value:
            hist.max_value = self.high


def percentiles(hist: HdrHistogram, wanted: tuple[float, ...]) -> dict[float, int]:
    """``{percentile: value}`` exactly as ``hist.get_value_at_percentile`` gives them, faster."""
    if not hist.total_count:
        return dict.fromkeys(wanted, 0)
    last = hist.get_counts_array_index(hist.max_value) + 1
    cumulative = list(accumulate(hist.counts[:last]))
    out = {}
    for p in wanted:
        index = bisect_left(cumulative, hist.get_target_count_at_percentile(p))
        value = hist.get_value_from_index(min(index, last - 1))
        out[p] = (
            hist.get_highest_equivalent_value(value)
            if p
            else hist.get_lowest_equivalent_value(value)
        )
    return out


def mean(hist: HdrHistogram) -> float:
    """The mean of the recorded values (each counted at the middle of its bucket), 0 if none."""
    if not hist.total_count:
        return 0.0
    counts = hist.counts
    total = 0
    for index in range(hist.get_counts_array_index(hist.max_value) + 1):
        n = counts[index]
        if n:
            total += n * hist._hdr_median_equiv_value(hist.get_value_from_index(index))
    return total / hist.total_count
