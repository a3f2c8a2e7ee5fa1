"""The corpus spec: one YAML file in ``include/corpora/``, every section in one typed object."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import _Strict
from .generation import GenerationSpec
from .judge import JudgeSpec
from .prompts import PromptsSpec
from .quality import QualitySpec
from .refresh import RefreshSpec
from .schedule import schedule_problem
from .seeds import SeedsSpec
from .tasks import MIN_GENERATE_TIMEOUT_S, TasksSpec
from .topics import TopicsSpec
from .vocabulary import CPU_GENERATE_POOL, STORAGE_ENV


class StorageSpec(_Strict):
    uri: str | None = Field(default=None, description=f"fsspec URI (file://, s3://); ${STORAGE_ENV} overrides")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(file|s3|memory)://.+", value):
            raise ValueError("expected a URI starting with file://, s3:// or memory://")
        return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, None: 1}


class ApprovalSpec(_Strict):
    """A human approval between the quality gate and ``publish`` (an Airflow human-in-the-loop task)."""

    required: bool = Field(default=False, description="ask a person to approve every release before it is published")
    assigned_users: list[str] = Field(
        default_factory=list,
        description="Airflow user ids allowed to answer (empty: anyone who may edit the DAG's task instances)")
    timeout: float = Field(
        default=86_400.0, gt=0, le=30 * 86_400,
        description="how long to wait for an answer: seconds, or a duration like 90s, 30m, 24h, 7d")
    on_timeout: Literal["reject"] = Field(
        default="reject", description="what an unanswered request means (only reject: silence is not an approval)")

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if not match:
                raise ValueError("expected a duration: a number of seconds, or a number with s, m, h or d (e.g. 24h)")
            return float(match.group(1)) * _UNIT_S[match.group(2)]
        return value

    @field_validator("assigned_users")
    @classmethod
    def _users(cls, value: list[str]) -> list[str]:
        if any(not u.strip() for u in value):
            raise ValueError("expected non-empty Airflow user ids")
        return value


class PublishSpec(_Strict):
    rows_per_file: int = Field(default=100_000, ge=1)
    license: str = "other"
    approval: ApprovalSpec = ApprovalSpec()


class CorpusSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="corpus id: lowercase letters, digits, _")
    description: str = ""
    schedule: str | None = Field(default=None, description="cron expression or preset like @weekly; null = manual")
    documents: int = Field(ge=1, le=100_000_000, description="documents each run publishes (new documents per refresh)")
    seeds: SeedsSpec
    topics: TopicsSpec = TopicsSpec()
    prompts: PromptsSpec
    generation: GenerationSpec = GenerationSpec()
    quality: QualitySpec = QualitySpec()
    judge: JudgeSpec = JudgeSpec()
    storage: StorageSpec = StorageSpec()
    publish: PublishSpec = PublishSpec()
    tasks: TasksSpec = TasksSpec()
    refresh: RefreshSpec = RefreshSpec()

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None and (problem := schedule_problem(value)):
            raise ValueError(problem)
        return value

    # Set by load_spec, not by the YAML.
    source_path: Path | None = Field(default=None, exclude=True)

    @property
    def spec_dir(self) -> Path:
        return self.source_path.parent if self.source_path else Path.cwd()

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.spec_dir / path).resolve()

    @property
    def outline_path(self) -> Path | None:
        return self.resolve(self.seeds.outline) if self.seeds.outline is not None else None

    def resolve_uri(self, path: str) -> str:
        """A source path as a URI: s3:// (and other schemes) as given, local paths resolved to file://."""
        if "://" in path:
            return path
        return self.resolve(Path(path)).as_uri()

    @property
    def template_dir(self) -> Path:
        return self.resolve(self.prompts.template_dir)

    @property
    def dag_id(self) -> str:
        return f"synthcorpus_{self.name}"

    @property
    def asset_name(self) -> str:
        """The Airflow asset ``publish`` updates with each release (consumers schedule on it)."""
        return f"synthcorpus_{self.name}"

    @property
    def asset_uri(self) -> str:
        return f"synthcorpus://{self.name}/latest"

    def timeout_s(self, stage: str) -> float:
        """The Airflow ``execution_timeout`` of a stage's task (of one shard, for generate)."""
        if stage not in ("generate", "top_up"):
            return self.tasks.timeout_s
        gen = self.generation
        if stage == "top_up":  # every round in one task, in-process: at most documents prompts in all
            worst = self.documents * gen.max_tokens * gen.max_attempts / gen.expected_tokens_per_s
            return float(max(self.tasks.timeout_s, math.ceil(3 * worst + gen.expected_load_s)))
        if self.tasks.generate_timeout_s is not None:
            return self.tasks.generate_timeout_s
        worst = gen.rows_per_shard(self.documents) * gen.max_tokens * gen.max_attempts / gen.expected_tokens_per_s
        pod_start = gen.kubernetes.startup_timeout_s if gen.runner == "kubernetes" else 0  # waiting for a GPU node
        return float(max(MIN_GENERATE_TIMEOUT_S, math.ceil(3 * worst + gen.expected_load_s)) + pod_start)

    def pool(self, stage: str) -> str | None:
        """The Airflow pool of a stage's task: generation's pool for generate, the CPU pool for topics when the
        in-process llama.cpp engine labels clusters; None (the default pool) otherwise."""
        if stage == "generate":
            return self.generation.pool_name
        if stage == "top_up" and self.generation.engine == "llamacpp":  # top-up rounds generate in the task
            return CPU_GENERATE_POOL
        if stage == "topics" and self.topics.labeler == "engine" and self.generation.engine == "llamacpp":
            return CPU_GENERATE_POOL
        if stage == "judge" and self.judge.enabled and (self.judge.engine or self.generation.engine) == "llamacpp":
            return CPU_GENERATE_POOL  # the judge runs llama.cpp in the task
        return None

    def storage_uri(self) -> str:
        uri = os.environ.get(STORAGE_ENV) or self.storage.uri
        if not uri:
            uri = (Path.cwd() / "synthcorpus-data").as_uri()
        return uri.rstrip("/")

    def canonical(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()
