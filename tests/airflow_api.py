"""A small client of Airflow 3's public REST API (/api/v2, token from /auth/token), for tests and
benchmarks that drive a real deployment (synthcorpus.deploy.Stack). Every wait polls a condition with a
deadline: no fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = {"success", "failed"}


def wait_until(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


class AirflowAPI:
    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url.rstrip("/")
        token = httpx.post(f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30)
        token.raise_for_status()
        self.client = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=30,
                                   headers={"Authorization": f"Bearer {token.json()['access_token']}"})

    def get(self, path: str, **params) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict) -> Any:
        r = self.client.post(path, json=body)
        assert r.status_code < 300, f"POST {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def patch(self, path: str, body: dict) -> Any:
        r = self.client.patch(path, json=body)
        assert r.status_code < 300, f"PATCH {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
        return wait_until(what, check, timeout_s, every_s)

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> dict:
        def parsed():
            r = self.client.get(f"/dags/{dag_id}")
            return r.json() if r.status_code == 200 else None

        return self.wait(f"DAG {dag_id} to be parsed", parsed, timeout_s)

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.post(f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float) -> dict:
        def done():
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in TERMINAL else None

        return self.wait(f"{dag_id} run {run_id} to finish", done, timeout_s, every_s=2.0)

    def task_instances(self, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict]:
        """Every task instance of the run (of ``task_id`` only, if given), page by page: the API answers at
        most [api] maximum_page_limit (100) per page."""
        tis: list[dict] = []
        while True:
            page = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100, offset=len(tis))
            tis += page["task_instances"]
            if not page["task_instances"] or len(tis) >= page["total_entries"]:
                return [t for t in tis if task_id is None or t["task_id"] == task_id]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries")["task_instances"]

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]

    def asset_events(self, **filters) -> list[dict]:
        return self.get("/assets/events", limit=100, **filters)["asset_events"]
