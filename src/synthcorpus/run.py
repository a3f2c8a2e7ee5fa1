"""Run-scoped storage layout and the result type every stage returns.

Layout: ``{storage}/{corpus}/runs/{run_id}/{stage}/...`` for work in progress,
``{storage}/{corpus}/versions/{version}/...`` for published releases and ``{storage}/{corpus}/latest.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import storage
from .spec import CorpusSpec


def sanitize_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+'; keep a path-safe, readable form."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    if not clean:
        raise ValueError(f"run id {run_id!r}: expected at least one letter or digit")
    return clean[:120]


@dataclass(frozen=True)
class RunContext:
    spec: CorpusSpec
    run_id: str

    @classmethod
    def create(cls, spec: CorpusSpec, run_id: str) -> RunContext:
        return cls(spec=spec, run_id=sanitize_run_id(run_id))

    @property
    def corpus_uri(self) -> str:
        return storage.join(self.spec.storage_uri(), self.spec.name)

    def run_uri(self, *parts: str) -> str:
        return storage.join(self.corpus_uri, "runs", self.run_id, *parts)

    def version_uri(self, *parts: str) -> str:
        return storage.join(self.corpus_uri, "versions", self.version, *parts)

    @property
    def latest_uri(self) -> str:
        return storage.join(self.corpus_uri, "latest.json")

    @property
    def version(self) -> str:
        # One version per run id: re-publishing the same run is idempotent.
        return self.run_id


@dataclass
class StageResult:
    stage: str
    outputs: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "outputs": self.outputs, "stats": self.stats}

    def save(self, run: RunContext) -> StageResult:
        storage.write_json(run.run_uri(self.stage, "_stage.json"), self.to_dict())
        return self
