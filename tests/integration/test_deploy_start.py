"""A deployment that cannot come up leaves nothing running: real Airflow components on the real
PostgreSQL and Redis, one of which exits during start-up."""

from __future__ import annotations

import os
import random

import pytest

from synthcorpus.deploy import COMPONENTS, DeployError, Stack, alive, drop_database
from tests.conftest import ROOT
from tests.integration.conftest import _ports

pytestmark = pytest.mark.slow


class BrokenWorkerStack(Stack):
    """A Celery worker given an option it rejects: it exits after the other components have started."""

    started: dict[str, int]

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()
        commands["celery-worker"] = [*commands["celery-worker"], "--autoscale", "not-a-number"]
        return commands

    def start(self, name: str) -> int:
        pid = super().start(name)
        self.started[name] = pid
        return pid


def test_a_component_that_exits_during_start_up_takes_the_others_down(tmp_path):
    api, worker_log, trigger_log = _ports(3)
    stack = BrokenWorkerStack(
        home=tmp_path / "airflow", project_dir=ROOT, api_port=api, worker_log_port=worker_log,
        trigger_log_port=trigger_log, queue=f"broken_{os.getpid()}",
        sql_alchemy_conn=f"postgresql+psycopg2://postgres@127.0.0.1:5432/synthcorpus_broken_{random.randint(0, 999_999)}")
    stack.started = {}
    try:
        with pytest.raises(DeployError) as failure:
            stack.up(say=lambda *_: None)
        # Checked before anything else stops processes: up() itself must have stopped them.
        left_running = [name for name, pid in stack.started.items() if alive(pid)]
        pid_files = list(stack.run_dir.glob("*.pid"))
    finally:
        stack.down(say=lambda *_: None)
        drop_database(stack.sql_alchemy_conn)
    message = str(failure.value)
    assert message.startswith("celery-worker exited during start-up; its log (")
    # The worker's own reason, though its log ends with the shutdown of its log server.
    assert "last error: ValueError: invalid literal for int() with base 10: 'not-a-number'" in message
    assert sorted(stack.started) == sorted(COMPONENTS)  # all five had been started ...
    assert left_running == [] and pid_files == []  # ... and none is left running
