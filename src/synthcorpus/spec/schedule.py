"""The spec's ``schedule``: a cron expression or one of Airflow's presets, checked when the spec loads so
that a typo is reported naming the spec file and the field (not as a DAG import error from deep inside
Airflow's timetable). Pure Python: the spec stays light at DAG parse time."""

from __future__ import annotations

import re

# Airflow 3.3's schedule presets (airflow.utils.dates.cron_presets, plus @once and @continuous).
PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_FIELDS = (  # name, low, high, names
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_RANGE = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(\d+))?$")
EXPECTED = (f"expected a cron expression of 5 fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * 1') "
            f"or a preset ({', '.join(PRESETS)})")


def schedule_problem(value: str) -> str | None:
    """What is wrong with a schedule string, or None when it is a valid preset or cron expression."""
    text = value.strip()
    if text.startswith("@"):
        return None if text in PRESETS else f"{EXPECTED}; got {value!r}: unknown preset"
    parts = text.split()
    if len(parts) != 5:
        return f"{EXPECTED}; got {value!r}: {len(parts)} field(s)"
    for part, (name, low, high, names) in zip(parts, _FIELDS):
        why = _field_problem(part.lower(), name, low, high, names)
        if why:
            return f"{EXPECTED}; got {value!r}: {why}"
    return None


def _value(token: str, low: int, high: int, names: tuple[str, ...]) -> int | None:
    if token in names:
        return names.index(token) + (1 if low == 1 else 0)
    if token.isdigit() and low <= int(token) <= high:
        return int(token)
    return None


def _field_problem(part: str, name: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    for item in part.split(","):
        if name == "day of month" and item in ("l", "?"):  # last day of month (croniter), "no specific value"
            continue
        if name == "day of week":
            if item == "?":
                continue
            m = re.fullmatch(r"([0-7a-z]+)(#[1-5]|l)", item)  # 5#3: third Friday; 5l: last Friday (croniter)
            if m:
                item = m.group(1)
        m = _RANGE.match(item)
        if not m:
            return f"{name} {item!r} is not a value, range, list or step"
        span, step = m.group(1), m.group(2)
        if step is not None and int(step) == 0:
            return f"{name} {item!r}: a step must be at least 1"
        if span == "*":
            continue
        bounds = span.split("-")
        values = [_value(b, low, high, names) for b in bounds]
        if any(v is None for v in values):  # a reversed range (22-2) wraps around, as croniter reads it
            return f"{name} {item!r} is out of range {low}-{high}"
    return None
