"""Engines behind one interface. Heavy libraries are imported only when an engine is created."""

from __future__ import annotations

from typing import Any

from .base import Completion, Engine, EngineError, Request, SamplingParams

__all__ = ["Completion", "Engine", "EngineError", "Request", "SamplingParams", "load_engine"]


def load_engine(cfg: dict[str, Any]) -> Engine:
    """Create the engine named by a generation config (``spec.generation`` as a dict)."""
    name = cfg.get("engine")
    if name == "llamacpp":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model=cfg["model"], n_ctx=int(cfg.get("n_ctx", 2048)), threads=cfg.get("threads"), base_dir=cfg.get("base_dir")
        )
    if name == "openai":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine.from_config(cfg)
    if name == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine.from_config(cfg)
    raise EngineError(f"generation.engine: expected one of 'llamacpp', 'vllm', 'openai', got {name!r}")
