"""stats: descriptive statistics and log parsing with Python's standard library.

A nuropb service written in Python: statistics, re, datetime and json do the
work; report() calls the Go greeter service through the host.
"""

import collections
import json
import math
import statistics

import nuropb
from logparse import parse_line


def _numbers(values):
    if not isinstance(values, list) or not values:
        raise nuropb.BadRequest("values must be a non-empty list of numbers")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise nuropb.BadRequest(f"values[{i}] is {v!r}, not a finite number")
        out.append(v)
    return out


@nuropb.service("stats", version="1.0.0", calls=["greeter"], publishes=["stats.reported"])
class Stats:
    """Descriptive statistics and log parsing, written in Python."""

    def summarize(self, values: list, quantiles: int = 4) -> dict:
        """Count, mean, median, standard deviation, range and quantile cut points.

        Args:
            values: the numbers (at least one)
            quantiles: how many equal groups the cut points divide the data into, 2 to 100
        """
        xs = _numbers(values)
        if not 2 <= quantiles <= 100:
            raise nuropb.BadRequest(f"quantiles must be 2 to 100, got {quantiles}")
        return {
            "count": len(xs),
            "mean": statistics.fmean(xs),
            "median": statistics.median(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs),
            "max": max(xs),
            "quantiles": statistics.quantiles(xs, n=quantiles) if len(xs) > 1 else [],
        }

    def correlate(self, x: list, y: list) -> dict:
        """Pearson correlation and the least-squares line y = slope * x + intercept.

        Args:
            x: the first variable
            y: the second, as long as x (at least two points)
        """
        xs, ys = _numbers(x), _numbers(y)
        if len(xs) != len(ys) or len(xs) < 2:
            raise nuropb.BadRequest("x and y must have the same length, at least 2")
        try:
            slope, intercept = statistics.linear_regression(xs, ys)
            r = statistics.correlation(xs, ys)
        except statistics.StatisticsError as e:
            raise nuropb.BadRequest(str(e)) from None
        return {"r": r, "slope": slope, "intercept": intercept}

    def parse_log(self, text: str, level: str = "") -> dict:
        """Parses log lines ("2024-05-01T12:00:00Z ERROR db: connection lost").

        Returns counts per level and per component, the time span, and the
        entries (only those at level, if given). Lines that do not parse are
        counted as skipped.

        Args:
            text: the log, one entry per line
            level: keep only entries at this level (e.g. "ERROR")
        """
        entries, skipped = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            e = parse_line(line)
            if e is None:
                skipped += 1
            else:
                entries.append(e)
        levels = collections.Counter(e["level"] for e in entries)
        components = collections.Counter(e["component"] for e in entries if e["component"])
        times = sorted(e["time"] for e in entries)
        if level:
            entries = [e for e in entries if e["level"] == level.upper()]
        return {
            "levels": dict(levels),
            "components": dict(components),
            "first": times[0] if times else None,
            "last": times[-1] if times else None,
            "span_seconds": (times[-1] - times[0]).total_seconds() if times else 0.0,
            "skipped": skipped,
            "entries": entries,
        }

    def report(self, ctx, name: str, values: list) -> str:
        """Greets name through the greeter service, then summarizes values as JSON text.

        Args:
            name: who the report is for
            values: the numbers to summarize
        """
        greeting = ctx.call("greeter", "hello", name=name)
        summary = self.summarize(values)
        ctx.publish("stats.reported", {"name": name, "count": summary["count"]})
        ctx.log(f"report for {name}: {summary['count']} values")
        return f"{greeting}\n" + json.dumps(summary, sort_keys=True)
