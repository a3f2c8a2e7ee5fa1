"""``tasks``: how Airflow runs each stage's task — retries and time limits (``execution_timeout``)."""

from __future__ import annotations

from pydantic import Field

from .base import _Strict

MIN_GENERATE_TIMEOUT_S = 600.0


class TasksSpec(_Strict):
    retries: int = Field(default=2, ge=0, le=20, description="retries of every task (a retried shard resumes from its checkpoints)")
    retry_delay_s: float = Field(default=30.0, ge=0, le=86_400)
    timeout_s: float = Field(default=3600.0, gt=0, description="execution_timeout of every task but generate")
    generate_timeout_s: float | None = Field(
        default=None, gt=0,
        description="execution_timeout of one generate shard; default: 3x the plan's worst case (every attempt "
        "of every row to max_tokens at expected_tokens_per_s) plus the model load, at least 10 minutes; plus the pod "
        "start-up timeout on Kubernetes",
    )
