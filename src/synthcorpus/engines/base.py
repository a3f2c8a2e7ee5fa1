"""The engine interface: every engine turns prompts into the same row schema."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float
    top_p: float
    repeat_penalty: float = 1.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SamplingParams:
        return cls(
            max_tokens=int(cfg["max_tokens"]),
            temperature=float(cfg["temperature"]),
            top_p=float(cfg["top_p"]),
            repeat_penalty=float(cfg.get("repeat_penalty", 1.0)),
        )


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class EngineError(RuntimeError):
    """The engine failed or replied with something unusable; the message says which prompt and why.

    ``transient``: the server, not the prompt, failed (no reply, a 5xx, a malformed reply), after the engine's
    own retries. Generation does not spend an attempt (a new seed) on it: the shard stops with its finished rows
    checkpointed and fails, and the task's retry resumes with the same seeds (see generation.generate_shard)."""

    transient = False


@dataclass(frozen=True)
class Request:
    prompt: str
    seed: int


class Engine(ABC):
    name: str

    @abstractmethod
    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion: ...

    def generate_batch(self, requests: Sequence[Request], params: SamplingParams) -> list[Completion | EngineError]:
        """One result per request, in order; a failed request yields its EngineError instead of raising,
        so one bad row never throws away a batch. Engines that batch or run concurrently override this."""
        out: list[Completion | EngineError] = []
        for r in requests:
            try:
                out.append(self.generate(r.prompt, params, r.seed))
            except EngineError as exc:
                out.append(exc)
        return out

    @abstractmethod
    def model_info(self) -> dict[str, Any]:
        """What lineage records: model name, file, sha256."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
