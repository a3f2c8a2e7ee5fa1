"""The spec's schedule check agrees with what Airflow's cron timetable accepts (croniter, the library
Airflow 3.3 validates cron strings with, as the oracle), so a spec that loads also parses as a DAG."""

from __future__ import annotations

import pytest
from croniter import croniter

from synthcorpus.spec.schedule import PRESETS, schedule_problem

GOOD = ["0 3 * * 1", "*/15 * * * *", "0 0 1 */3 *", "5 4 * * sun", "0 22 * * 1-5", "0 0,12 1 jan,jul *",
        "30 2 L * *", "0 9 * * 5#3", "0 9 * * mon-fri", "59 23 31 12 7", "0-30/5 * * * *", "0 0 ? * *", "0 22-2 * * *"]
BAD = ["0 25 * * *", "60 * * * *", "* * *", "* * * * * *", "*/0 * * * *", "0 3 1 foo *", "0 0 32 * *", "0 0 * 13 *",
       "0 0 * * 8", "a b c d e", "0 0 * * mon-", "@fortnightly", "@annually", ""]


@pytest.mark.parametrize("expr", GOOD)
def test_valid_cron_expressions_pass_and_croniter_agrees(expr):
    assert schedule_problem(expr) is None
    assert croniter.is_valid(expr)


@pytest.mark.parametrize("expr", BAD)
def test_invalid_schedules_are_refused_with_the_expectation(expr):
    problem = schedule_problem(expr)
    assert problem and problem.startswith("expected a cron expression of 5 fields")
    assert repr(expr) in problem
    if not expr.startswith("@") and len(expr.split()) == 5:
        assert not croniter.is_valid(expr), f"croniter accepts {expr!r}: the spec must not refuse it"


def test_presets_are_airflows():
    from airflow.utils.dates import cron_presets

    assert set(PRESETS) == set(cron_presets) | {"@once", "@continuous"}
