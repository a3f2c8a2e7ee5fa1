"""The one module of the package that imports Airflow (enforced by the import contract in
pyproject.toml): what the libraries need from a running Airflow, imported lazily so that the package
works without it (a generator pod, the CLI). ``dags/`` imports Airflow itself."""

from __future__ import annotations

from typing import Any


class ConnectionError_(RuntimeError):
    """An Airflow connection cannot be read; the message never carries its contents."""


def get_connection(conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` (Task SDK)."""
    try:
        from airflow.sdk import Connection
    except ImportError:
        raise ConnectionError_(
            f"reading connection {conn_id!r} needs Airflow's Task SDK (apache-airflow-task-sdk)"
        ) from None
    try:
        return Connection.get(conn_id)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException, runtime errors, parse errors
        detail = "not defined" if type(exc).__name__ == "AirflowNotFoundException" else type(exc).__name__
        raise ConnectionError_(f"cannot read Airflow connection {conn_id!r} ({detail})") from None


def max_map_length() -> int:
    """Airflow's ``[core] max_map_length`` (the most map indexes a mapped task may have) inside an Airflow
    task; Airflow's default elsewhere (the CLI, a pod, tests), where importing Airflow's configuration would
    create an AIRFLOW_HOME and reconfigure logging. A plan is the same in and out of Airflow by default."""
    import sys

    from .spec.vocabulary import DEFAULT_MAX_MAP_LENGTH

    if "airflow.configuration" not in sys.modules:
        return DEFAULT_MAX_MAP_LENGTH
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_MAP_LENGTH)


def emit_metrics(metrics: list[tuple[str, str, float]]) -> None:
    """Send metrics (``synthcorpus.observability``) through Airflow's stats client, which sends them to
    StatsD (or OpenTelemetry) as ``[metrics]`` configures, or nowhere. Never fails the task: a metric that
    cannot be sent is logged and dropped."""
    import logging

    try:
        from airflow.sdk.observability import stats
    except ImportError:
        return
    _init_stats(stats)
    for kind, name, value in metrics:
        try:
            if kind == "incr":
                stats.incr(name, count=int(value))
            else:
                stats.gauge(name, value, delta=kind == "delta")
        except Exception as exc:  # noqa: BLE001 - metrics are best effort
            logging.getLogger(__name__).warning("metric %s not sent: %s", name, exc)


def _init_stats(stats: Any) -> None:
    """Configure the stats client from ``[metrics]`` where Airflow did not: its task runner does
    (Celery / Kubernetes workers), ``airflow dags test`` running tasks in its own process does not. Checks
    the private ``_factory`` of the module that keeps it (apache-airflow-task-sdk 1.3) and leaves a
    configured client alone."""
    try:
        from airflow.sdk._shared.observability.metrics import stats as state
    except ImportError:
        return
    if getattr(state, "_factory", "configured") is not None:
        return
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability.metrics import stats_utils

    stats.initialize(factory=stats_utils.get_stats_factory(),
                     export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=False))
