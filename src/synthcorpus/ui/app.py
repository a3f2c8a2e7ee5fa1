"""The Corpora FastAPI app: routes over ``data`` and ``pages``, with the caller's auth dependencies.

The app knows nothing of Airflow: ``synthcorpus.ui.plugin`` builds it with Airflow's auth manager
(``authenticated`` on every route, ``dag_access`` on every route under ``/dags/{dag_id}``) and an
``AirflowInfo`` that reads schedules and runs from Airflow's database. Tests may build it with fakes.

Routes (relative to the mount prefix, ``/corpora`` in Airflow)::

    /                                         every corpus (the nav view)
    /dags/{dag_id}                            a corpus: versions over time, runs, the spec (the DAG tab)
    /dags/{dag_id}/diff?a=..&b=..             two versions side by side
    /dags/{dag_id}/runs/{run_id}              a run's report (the DAG-run tab)
    /dags/{dag_id}/runs/{run_id}/progress.json    live generation progress
    /dags/{dag_id}/runs/{run_id}/files/{path}     lineage.json, report.html, data_docs/...
    /static/{name}                            plotly.min.js (from the plotly package), corpora.js, corpora.css
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..layout import LINEAGE
from ..spec import CorpusSpec, discover
from ..storage import StorageError
from . import data, pages


class AirflowInfo:
    """What the pages show from the orchestrator. This default knows nothing (no schedule state, run ids
    are storage run ids); the plugin's reads Airflow's database."""

    def dags(self, dag_ids: list[str]) -> dict[str, dict[str, Any]]:
        """dag_id -> {"next_run": str | None, "last_run": {"run_id", "state", "start_date"} | None}."""
        return {}

    def storage_run_id(self, dag_id: str, run_id: str) -> str:
        """The storage run id of a DAG run (its ``run_name`` param when it set one)."""
        return run_id

    def visible(self, request: Any, dag_ids: list[str]) -> list[str]:
        """The DAGs the request's user may read (the corpus list shows only those)."""
        return dag_ids


@dataclass
class Corpora:
    """The corpus specs in a folder, reloaded when a file changes (same discovery as the DAG factory)."""

    directory: Path
    _stamp: tuple = ()
    _specs: dict[str, CorpusSpec] = field(default_factory=dict)
    _broken: dict[str, list[Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _refresh(self) -> None:
        files = sorted(self.directory.glob("*.yaml"))
        stamp = tuple((str(p), p.stat().st_mtime_ns) for p in files)
        with self._lock:
            if stamp == self._stamp:
                return
            good, broken = discover(self.directory)
            self._specs = {s.dag_id: s for s in good}
            self._broken = {path: exc.problems for path, exc in broken.items()}
            self._stamp = stamp

    def specs(self) -> dict[str, CorpusSpec]:
        self._refresh()
        return self._specs

    def broken(self) -> dict[str, list[Any]]:
        self._refresh()
        return self._broken

    def problems_of(self, dag_id: str) -> list[Any]:
        """The load problems of the broken spec whose ``name`` makes ``dag_id``."""
        for path, problems in self.broken().items():
            try:
                name = (yaml.safe_load(Path(path).read_text()) or {}).get("name")
            except (OSError, yaml.YAMLError, AttributeError):
                name = None
            if name and f"synthcorpus_{name}" == dag_id:
                return problems
        return []


def static_file(name: str) -> tuple[bytes, str]:
    """The app's static files; plotly.min.js comes from the installed plotly package."""
    if name == "plotly.min.js":
        return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes(), "text/javascript"
    if name in ("corpora.js", "corpora.css", "corpora.svg"):
        return resources.files("synthcorpus.ui").joinpath("static", name).read_bytes(), data.content_type(name)
    raise data.NotFound(name)


def create_app(corpora_dir: str | Path, *, authenticated: Callable | None = None, dag_access: Callable | None = None,
               airflow: AirflowInfo | None = None) -> Any:
    corpora = Corpora(Path(corpora_dir))
    info = airflow or AirflowInfo()
    app = FastAPI(title="synthcorpus Corpora", docs_url=None, redoc_url=None, openapi_url=None)
    every = [Depends(authenticated)] if authenticated else []
    per_dag = every + ([Depends(dag_access)] if dag_access else [])
    top = APIRouter(dependencies=every)
    dag = APIRouter(dependencies=per_dag)

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def storage_run(dag_id: str, run_id: str) -> str:
        """The storage run of a DAG run id from the URL (checked before anything else sees it)."""
        return info.storage_run_id(dag_id, data.checked_id(run_id, "run"))

    def spec_of(dag_id: str) -> CorpusSpec:
        spec = corpora.specs().get(dag_id)
        if spec is None:
            raise data.NotFound(f"no corpus spec makes DAG {dag_id!r}")
        return spec

    @app.exception_handler(data.NotFound)
    async def not_found(request: Request, exc: data.NotFound) -> Response:
        return HTMLResponse(pages.message_page(base(request), "Not found", str(exc)), status_code=404)

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> Response:
        # a file the page needs is unreadable or not what it should be: say which, not a stack trace
        return HTMLResponse(pages.message_page(base(request), "Storage error", str(exc)), status_code=502)

    @top.get("/", response_class=HTMLResponse)
    def corpora_list(request: Request) -> str:
        specs = corpora.specs()
        shown = info.visible(request, list(specs))
        airflow_state = info.dags(shown)
        rows = [{**data.corpus_summary(specs[d]), "airflow": airflow_state.get(d) or {}} for d in shown]
        return pages.corpora_page(base(request), str(corpora.directory), rows, corpora.broken())

    @top.get("/static/{name}")
    def static(name: str) -> Response:
        body, kind = static_file(name)
        return Response(body, media_type=kind, headers={"Cache-Control": "private, max-age=86400"})

    @dag.get("/dags/{dag_id}", response_class=HTMLResponse)
    def corpus(request: Request, dag_id: str) -> Response:
        spec = corpora.specs().get(dag_id)
        if spec is None:
            problems = corpora.problems_of(dag_id)
            if not problems:
                raise data.NotFound(f"no corpus spec makes DAG {dag_id!r}")
            return HTMLResponse(pages.corpus_page(base(request), dag_id.removeprefix("synthcorpus_"), dag_id, summary=None,
                                                  airflow={}, versions=[], runs=[], spec_text=None, problems=problems))
        return HTMLResponse(pages.corpus_page(
            base(request), spec.name, dag_id, summary=data.corpus_summary(spec),
            airflow=info.dags([dag_id]).get(dag_id) or {}, versions=data.versions(spec), runs=data.runs(spec),
            spec_text=data.spec_text(spec), problems=[]))

    @dag.get("/dags/{dag_id}/diff", response_class=HTMLResponse)
    def diff(request: Request, dag_id: str, a: str, b: str) -> str:
        spec = spec_of(dag_id)
        return pages.diff_page(base(request), spec.name, dag_id, data.version_diff(spec, a, b))

    @dag.get("/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse)
    def run(request: Request, dag_id: str, run_id: str) -> str:
        spec = spec_of(dag_id)
        try:
            report = data.run_report(spec, storage_run(dag_id, run_id))
        except data.NotStarted as exc:  # a queued run: not an error
            return pages.message_page(base(request), f"Run {run_id}", str(exc))
        return pages.run_page(base(request), report, run_id)

    @dag.get("/dags/{dag_id}/runs/{run_id}/progress.json")
    def progress(dag_id: str, run_id: str) -> JSONResponse:
        spec = spec_of(dag_id)
        return JSONResponse(data.progress(spec, storage_run(dag_id, run_id)),
                            headers={"Cache-Control": "no-store"})

    @dag.get("/dags/{dag_id}/runs/{run_id}/files/{rel:path}")
    def run_file(dag_id: str, run_id: str, rel: str) -> Response:
        spec = spec_of(dag_id)
        stored = storage_run(dag_id, run_id)
        body, kind = data.run_file(spec, stored, rel)
        headers = {"X-Content-Type-Options": "nosniff"}
        if rel == LINEAGE:  # named like the run page's download link: the storage run
            headers["Content-Disposition"] = f'attachment; filename="lineage-{data.run_context(spec, stored).run_id}.json"'
        return Response(body, media_type=kind, headers=headers)

    app.include_router(top)
    app.include_router(dag)
    return app


def corpora_dir_default(project_dir: Path | None = None) -> Path:
    """Where the DAG factory reads specs: ``SYNTHCORPUS_CORPORA_DIR``, else ``<project>/include/corpora``."""
    env = os.environ.get("SYNTHCORPUS_CORPORA_DIR")
    if env:
        return Path(env)
    return (project_dir or Path.cwd()) / "include" / "corpora"

