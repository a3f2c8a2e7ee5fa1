"""``generation``: engine, runner (local or Kubernetes pods), sampling, shards and checkpoints."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from .base import _Strict
from .vocabulary import BUNDLED_MODEL, DEFAULT_MAX_MAP_LENGTH, CPU_GENERATE_POOL, CPU_THREADS_ENV, GPU_GENERATE_POOL


class OpenAISpec(_Strict):
    """Any OpenAI-compatible server (vLLM serve, TGI, llama.cpp server, hosted). The key is never in the spec."""

    base_url: str | None = Field(default=None, description="e.g. http://vllm:8000/v1; else from conn_id or $OPENAI_BASE_URL")
    conn_id: str | None = Field(default=None, description="Airflow connection with host (base URL) and password (key)")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="environment variable holding the key")
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50)


class VLLMSpec(_Strict):
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=256)
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    batch_size: int = Field(default=256, ge=1, description="prompts per LLM.chat call (one checkpoint unit)")


class KubernetesSpec(_Strict):
    """How generation pods run when ``generation.runner`` is ``kubernetes``."""

    namespace: str = "synthcorpus"
    image: str = "ghcr.io/example/synthcorpus-generator:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = "synthcorpus-generator"
    gpus_per_pod: int = Field(default=1, ge=0, le=16)
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    model_cache_pvc: str | None = Field(default="synthcorpus-model-cache", description="PVC mounted at /models")
    secrets: list[str] = Field(default_factory=list, description="Kubernetes Secret names exposed as env (envFrom)")
    startup_timeout_s: int = Field(default=900, ge=30)
    deferrable: bool = True


class BudgetSpec(_Strict):
    """Run-wide limits on generation (every shard of the run counts; None = unlimited). When one is
    reached, shards stop issuing requests: finished rows are kept, the rest are written with
    ``status=budget`` (see ``synthcorpus.generation``). Checked at every checkpoint, so a running shard can
    overshoot by at most one checkpoint (``checkpoint_rows`` rows or ``checkpoint_seconds``)."""

    max_completion_tokens: int | None = Field(default=None, gt=0, description="completion tokens of every attempt of every shard")
    max_cost_usd: float | None = Field(default=None, gt=0, description="estimated cost (GPU hours and tokens at the spec's prices)")
    max_gpu_hours: float | None = Field(default=None, gt=0, description="GPU hours of the generation pods")

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.max_completion_tokens, self.max_cost_usd, self.max_gpu_hours))


class GenerationSpec(_Strict):
    engine: Literal["llamacpp", "vllm", "openai"] = "llamacpp"
    runner: Literal["local", "kubernetes"] = Field(default="local", description="in-process task or one pod per shard")
    model: str = Field(
        default=BUNDLED_MODEL,
        description=f"llamacpp: '{BUNDLED_MODEL}' or a .gguf path; vllm: HF id or local dir; openai: served model name",
    )
    max_tokens: int = Field(default=384, ge=16, le=32768)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.15, ge=1.0, le=2.0)
    seed: int = Field(default=0, ge=0)
    n_ctx: int = Field(default=2048, ge=256)
    threads: int | None = Field(default=None, ge=1, description=f"CPU threads; default: ${CPU_THREADS_ENV}, else all cores")
    pool: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,256}$",
        description=f"Airflow pool of generate; default {CPU_GENERATE_POOL!r} (local) or {GPU_GENERATE_POOL!r} (kubernetes)",
    )
    shard_size: int = Field(default=16, ge=1, description="max prompts per generation shard")
    target_tokens_per_shard: int | None = Field(
        default=None, ge=1, description="size shards by expected completion tokens (max_tokens per prompt) instead"
    )
    max_shards: int | None = Field(default=None, ge=1, description="cap on shards (shards grow to fit)")
    expected_load_s: float = Field(default=5.0, ge=0, description="model load time per shard, for the plan's ratio")
    expected_tokens_per_s: float = Field(default=80.0, gt=0, description="per pod/process, for the plan's ratio")
    checkpoint_rows: int = Field(default=25, ge=1, description="checkpoint finished rows every N rows ...")
    checkpoint_seconds: float = Field(default=60.0, gt=0, description="... or every T seconds")
    max_attempts: int = Field(default=3, ge=1, le=20, description="generation attempts per row (refine loop)")
    cost_per_gpu_hour: float = Field(default=0.0, ge=0, description="for the cost estimate in lineage")
    cost_per_million_tokens: float = Field(
        default=0.0, ge=0, description="token-billed servers: price of a million prompt + completion tokens (cost estimate)"
    )
    budget: BudgetSpec = BudgetSpec()
    openai: OpenAISpec = OpenAISpec()
    vllm: VLLMSpec = VLLMSpec()
    kubernetes: KubernetesSpec = KubernetesSpec()

    def rows_per_shard(self, prompts: int, map_limit: int | None = DEFAULT_MAX_MAP_LENGTH) -> int:
        """Prompts per plan shard: ``shard_size``, or ``target_tokens_per_shard`` / ``max_tokens``; more when
        ``max_shards`` or Airflow's ``[core] max_map_length`` (``map_limit``) caps the number of shards
        (a mapped task with more map indexes fails its upstream; None: no such cap)."""
        rows = self.shard_size if self.target_tokens_per_shard is None else max(1, self.target_tokens_per_shard // self.max_tokens)
        caps = [c for c in (self.max_shards, map_limit) if c is not None]
        cap = min(caps) if caps else None
        if cap is not None and math.ceil(prompts / rows) > cap:
            rows = math.ceil(prompts / cap)
        return rows

    @property
    def pool_name(self) -> str:
        if self.pool:
            return self.pool
        return GPU_GENERATE_POOL if self.runner == "kubernetes" else CPU_GENERATE_POOL

    @model_validator(mode="after")
    def _runner(self) -> GenerationSpec:
        if self.runner == "kubernetes" and self.engine == "llamacpp" and self.kubernetes.gpus_per_pod > 0:
            raise ValueError("expected engine 'vllm' or 'openai' for GPU pods (runner 'kubernetes'), got 'llamacpp'")
        # A limit that can never be reached would let a run spend without bound while looking capped.
        if self.budget.max_cost_usd is not None and not (self.cost_per_gpu_hour or self.cost_per_million_tokens):
            raise ValueError("budget.max_cost_usd: expected cost_per_gpu_hour or cost_per_million_tokens > 0 "
                             "(without a price the estimated cost stays 0)")
        if self.budget.max_gpu_hours is not None and not (self.runner == "kubernetes" and self.kubernetes.gpus_per_pod > 0):
            raise ValueError("budget.max_gpu_hours: expected runner 'kubernetes' with kubernetes.gpus_per_pod > 0 "
                             "(local generation counts no GPU hours)")
        return self
