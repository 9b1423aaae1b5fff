"""Parsing log lines with re: a helper module packed with the service."""

import datetime
import re

# 2024-05-01T12:00:00Z ERROR db: connection lost
LINE = re.compile(
    r"^(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\s+"
    r"(?P<level>[A-Za-z]+)\s+"
    r"(?:(?P<component>[\w.-]+):\s+)?"
    r"(?P<message>.*)$"
)


def parse_line(line):
    """One log line as a dict, or None if it does not look like one."""
    m = LINE.match(line.strip())
    if not m:
        return None
    ts = m["ts"].replace(" ", "T")
    if ts.endswith("Z"):
        ts = ts[:-1] + "+00:00"
    t = datetime.datetime.fromisoformat(ts)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return {"time": t, "level": m["level"].upper(), "component": m["component"] or "", "message": m["message"]}
