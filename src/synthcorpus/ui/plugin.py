"""The Corpora Airflow plugin: the FastAPI app (``synthcorpus.ui.app``) mounted by the api-server at
``/corpora``, behind Airflow's own auth manager, and three external views that show it inside the UI:

- **Corpora** in the nav (every corpus),
- a **Corpus** tab on each DAG (``/dags/<dag_id>/plugin/corpus``),
- a **Corpus run** tab on each DAG run (``/dags/<dag_id>/runs/<run_id>/plugin/corpus-run``).

A plugin's FastAPI app is mounted without any auth: every route here depends on
``requires_authenticated()`` (valid JWT from the ``Authorization`` header or the UI's ``_token`` cookie,
which the UI's iframes send) and every corpus route also on ``requires_access_dag("GET", RUN)`` for the
corpus's DAG. The only module of the package besides ``airflow_adapter`` that imports Airflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from ..layout import sanitize_run_id

log = logging.getLogger(__name__)
URL_PREFIX = "/corpora"
RUN_PAGE = URL_PREFIX + "/dags/{dag_id}/runs/{run_id}"  # a DAG run's Corpora page (the app's run route)


def run_page_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The absolute URL of a DAG run's Corpora page (``[api] base_url`` + the plugin's run route)."""
    from urllib.parse import quote

    return base_url.rstrip("/") + RUN_PAGE.format(dag_id=quote(dag_id), run_id=quote(run_id, safe=""))


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="minutes") if value is not None else None


def _airflow_database() -> Any:
    from .app import AirflowInfo

    class AirflowDatabase(AirflowInfo):
        """Schedules and runs from Airflow's metadata database (the api-server has a session)."""

        def dags(self, dag_ids: list[str]) -> dict[str, dict[str, Any]]:
            from airflow.models import DagModel, DagRun
            from airflow.utils.session import create_session
            from sqlalchemy import select

            out: dict[str, dict[str, Any]] = {}
            if not dag_ids:
                return out
            with create_session() as session:
                for dag in session.scalars(select(DagModel).where(DagModel.dag_id.in_(dag_ids))):
                    out[dag.dag_id] = {"next_run": None if dag.is_paused else _iso(dag.next_dagrun_create_after),
                                       "paused": dag.is_paused, "last_run": None}
                for dag_id in dag_ids:
                    run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                          .order_by(DagRun.run_after.desc()).limit(1)).first()
                    if run is not None:
                        out.setdefault(dag_id, {"next_run": None, "paused": None})["last_run"] = {
                            "run_id": run.run_id, "state": str(getattr(run.state, "value", run.state)),
                            "start_date": _iso(run.start_date)}
            return out

        def storage_run_id(self, dag_id: str, run_id: str) -> str:
            """The DAG factory's run id: the run's ``run_name`` param if it gave one, else the Airflow run id."""
            from airflow.models import DagRun
            from airflow.utils.session import create_session
            from sqlalchemy import select

            with create_session() as session:
                run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
                conf = (run.conf or {}) if run is not None else {}
            return sanitize_run_id(conf.get("run_name") or run_id)

        def visible(self, request: Any, dag_ids: list[str]) -> list[str]:
            from airflow.api_fastapi.app import get_auth_manager

            user = getattr(request.state, "synthcorpus_user", None)
            if user is None:
                return []
            allowed = get_auth_manager().filter_authorized_dag_ids(dag_ids=set(dag_ids), user=user, method="GET")
            return [d for d in dag_ids if d in allowed]

    return AirflowDatabase()


def build_app(corpora_dir: Path | None = None) -> Any:
    """The Corpora app behind Airflow's auth manager (imports the api-server's security module)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from fastapi import Request

    from .app import corpora_dir_default, create_app

    def authenticated(request, user) -> None:  # annotated below: FastAPI reads real types, not strings
        """Any authenticated Airflow user (401 otherwise); kept on the request for the corpus list's filter."""
        request.state.synthcorpus_user = user

    authenticated.__annotations__ = {"request": Request, "user": GetUserDep, "return": None}

    return create_app(corpora_dir or corpora_dir_default(), authenticated=authenticated,
                      dag_access=requires_access_dag("GET", DagAccessEntity.RUN), airflow=_airflow_database())


class LazyApp:
    """The ASGI app the api-server mounts, built on its first request: every other process that loads
    plugins (scheduler, dag-processor, workers, task runners, ``airflow dags test``) never imports the
    api-server's auth modules or FastAPI for it (about 1 s each)."""

    def __init__(self, project_dir: Path):
        self.project_dir = project_dir
        self._app: Any = None

    def app(self) -> Any:
        if self._app is None:
            from .app import corpora_dir_default

            self._app = build_app(corpora_dir_default(self.project_dir))
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app()(scope, receive, send)


def plugin_class(project_dir: Path) -> type[AirflowPlugin]:
    """The plugin for a project checkout (``plugins/`` calls this): specs from the same folder as the DAG
    factory's (``SYNTHCORPUS_CORPORA_DIR``, else ``<project>/include/corpora``)."""
    app = LazyApp(project_dir)

    class CorporaPlugin(AirflowPlugin):
        name = "synthcorpus_corpora"
        fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Corpora"}]
        external_views = [
            {"name": "Corpora", "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "corpora",
             "nav_top_level": True, "icon": f"{URL_PREFIX}/static/corpora.svg"},
            {"name": "Corpus", "href": f"{URL_PREFIX}/dags/{{DAG_ID}}", "destination": "dag", "url_route": "corpus"},
            {"name": "Corpus run", "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}", "destination": "dag_run",
             "url_route": "corpus-run"},
        ]

    return CorporaPlugin
