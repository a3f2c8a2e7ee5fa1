"""``generation``: engine, runner (local or Kubernetes pods), sampling, shards and checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Strict
from .vocabulary import BUNDLED_MODEL


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
    threads: int | None = Field(default=None, ge=1, description="CPU threads; default: all cores")
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
    openai: OpenAISpec = OpenAISpec()
    vllm: VLLMSpec = VLLMSpec()
    kubernetes: KubernetesSpec = KubernetesSpec()

    @model_validator(mode="after")
    def _runner(self) -> GenerationSpec:
        if self.runner == "kubernetes" and self.engine == "llamacpp" and self.kubernetes.gpus_per_pod > 0:
            raise ValueError("expected engine 'vllm' or 'openai' for GPU pods (runner 'kubernetes'), got 'llamacpp'")
        return self
