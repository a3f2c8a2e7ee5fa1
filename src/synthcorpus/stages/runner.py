"""The in-process runner: every stage of the table, in order, in this process (``synthcorpus run``, the
pipeline tests, debugging). The DAG factory turns the same table into Airflow tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from . import TABLE
from .contract import RunContext, execute, open_run, shards

if TYPE_CHECKING:
    from ..engines import Engine


def run_pipeline(spec_path: str, run_id: str, params: Mapping[str, Any] | None = None, *,
                 engine: Engine | None = None, until: str | None = None) -> dict[str, dict[str, Any]]:
    """Run (or resume: committed stages and shards are skipped) every stage, up to and including
    ``until``. Returns each stage's marker (a list of them for mapped stages)."""
    run = open_run(spec_path, run_id, params, engine)
    return run_stages(run, until=until)


def run_stages(run: RunContext, until: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in TABLE:
        if stage.mapped:
            out[stage.name] = [execute(run, stage.name, i) for i in shards(run)]
        else:
            out[stage.name] = execute(run, stage.name)
        if stage.name == until:
            break
    return out


def preview_prompts(spec: Any, n: int, run_id: str = "preview") -> list[dict[str, Any]]:
    """Run seeds -> topics -> prompts into a throwaway in-memory store and return the first n prompts."""
    import os

    from .. import storage
    from ..spec import STORAGE_ENV

    old = os.environ.get(STORAGE_ENV)
    os.environ[STORAGE_ENV] = f"memory://synthcorpus-preview-{os.getpid()}"
    try:
        run = RunContext.create(spec, run_id)
        prompts = run_stages(run, until="prompts")["prompts"]
        rows = storage.read_parquet(prompts["outputs"]["prompts"]).to_pylist()[:n]
        storage.delete(run.layout.corpus_uri)
        return rows
    finally:
        if old is None:
            os.environ.pop(STORAGE_ENV, None)
        else:
            os.environ[STORAGE_ENV] = old
