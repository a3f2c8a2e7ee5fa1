"""GPU engine: vLLM offline inference (``vllm.LLM``), for generation pods built from include/k8s/Dockerfile.

vLLM only exists in the generator image (``pip install 'synthcorpus[gpu]'``); it is imported when the
engine is created, never at module import, so DAG parsing and CPU runs never need it.

A batch is ONE ``LLM.chat(list_of_conversations, list_of_sampling_params, use_tqdm=False)`` call: vLLM
applies the model's chat template to each conversation, schedules them together (continuous batching)
and returns one ``RequestOutput`` per conversation, in input order. Each request carries its own
``SamplingParams(seed=request.seed)``, so a row's text does not depend on which batch it landed in.
``latency_s`` of each completion is the batch wall time divided by the batch size (vLLM runs the
requests concurrently; there is no per-request wall time to report).
"""

from __future__ import annotations

import gc
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

from .base import Completion, Engine, EngineError, Request, SamplingParams

log = logging.getLogger(__name__)

DEFAULT_BATCH = 256  # vLLM's default max_num_seqs: one batch fills the scheduler once
GPU_EXTRA_HINT = "the vllm engine needs the GPU extra: pip install 'synthcorpus[gpu]' (only in the generator image)"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise EngineError(f"{GPU_EXTRA_HINT} ({exc})") from None
    return vllm


def _resolve_model(model: str, base_dir: str | None) -> str:
    """A local model directory (relative to the spec file) as an absolute path; anything else (an HF
    repo id such as ``HuggingFaceTB/SmolLM2-1.7B-Instruct``) as given."""
    path = Path(model).expanduser()
    if not path.is_absolute() and base_dir and (Path(base_dir) / path).is_dir():
        return str((Path(base_dir) / path).resolve())
    if path.is_dir():
        return str(path.resolve())
    return model


def _hf_commit(model: str, revision: str | None, cache_dir: str | None) -> str | None:
    """The Hub commit the cached weights came from (from the cache's snapshots/<sha>/ path), if known."""
    if Path(model).is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # noqa: BLE001 - lineage nicety, never fatal
        return None
    if isinstance(found, str):
        m = re.search(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]", found)
        if m:
            return m.group(1)
    return None


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        dtype: str = "auto",
        seed: int = 0,
        download_dir: str | None = None,
        revision: str | None = None,
        base_dir: str | None = None,
        batch_size: int = DEFAULT_BATCH,
    ):
        self._vllm = _import_vllm()
        # Requests per generate_batch call (generation.py reads ``preferred_batch``): large enough to keep
        # vLLM's continuous batching busy, small enough that checkpoints between batches stay frequent.
        self.preferred_batch = max(1, int(batch_size))
        self.model_name = model
        self.model_path = _resolve_model(model, base_dir)
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.revision = revision
        self.download_dir = download_dir
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": float(gpu_memory_utilization),
            "max_model_len": max_model_len,
            "enable_prefix_caching": bool(enable_prefix_caching),
            "dtype": dtype,
            "seed": int(seed),
        }
        # Weights land in $HF_HOME (/models/hf on the model-cache PVC in a generation pod) unless a
        # download_dir is given.
        if download_dir:
            kwargs["download_dir"] = download_dir
        if revision:
            kwargs["revision"] = revision
        self.llm_kwargs = kwargs
        started = time.perf_counter()
        try:
            self._llm = self._vllm.LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - CUDA, download, config errors: all mean "no engine"
            raise EngineError(f"vllm: could not load model {model!r} ({type(exc).__name__}: {exc})") from exc
        self.load_s = time.perf_counter() - started
        log.info("vllm: loaded %s (tensor_parallel_size=%d) in %.1fs", model, self.tensor_parallel_size, self.load_s)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> VLLMEngine:
        """From ``spec.generation`` as a dict (plus ``base_dir``/``run_id``), as ``load_engine`` passes it."""
        _import_vllm()  # fail with the install hint before reading anything else
        v = cfg.get("vllm") or {}
        return cls(
            model=cfg["model"],
            tensor_parallel_size=int(v.get("tensor_parallel_size", 1)),
            gpu_memory_utilization=float(v.get("gpu_memory_utilization", 0.9)),
            max_model_len=v.get("max_model_len"),
            enable_prefix_caching=bool(v.get("enable_prefix_caching", True)),
            dtype=str(v.get("dtype", "auto")),
            seed=int(cfg.get("seed", 0)),
            download_dir=v.get("download_dir"),
            revision=v.get("revision"),
            base_dir=cfg.get("base_dir"),
            batch_size=int(v.get("batch_size") or DEFAULT_BATCH),
        )

    def _sampling(self, params: SamplingParams, seed: int) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            repetition_penalty=params.repeat_penalty,
            seed=int(seed),
        )

    @staticmethod
    def _completion(output: Any, latency: float) -> Completion:
        try:
            choice = output.outputs[0]
            reason = choice.finish_reason
            if reason not in ("stop", "length"):
                raise EngineError(f"vllm: request {getattr(output, 'request_id', '?')} ended with {reason!r}")
            return Completion(
                text=choice.text or "",
                finish_reason=reason,
                prompt_tokens=len(output.prompt_token_ids or ()),
                completion_tokens=len(choice.token_ids or ()),
                latency_s=latency,
            )
        except (AttributeError, IndexError, TypeError) as exc:
            raise EngineError(f"vllm: unexpected output shape ({exc!r}): {str(output)[:200]}") from exc

    def generate_batch(self, requests: Sequence[Request], params: SamplingParams) -> list[Completion | EngineError]:
        """One ``LLM.chat`` call for the whole batch; results in request order.

        If vLLM rejects the batch (typically one prompt longer than ``max_model_len``: vLLM validates
        every request before running any), each request is retried alone, so only the bad ones become
        EngineErrors.
        """
        if not requests:
            return []
        conversations = [[{"role": "user", "content": r.prompt}] for r in requests]
        sampling = [self._sampling(params, r.seed) for r in requests]
        started = time.perf_counter()
        try:
            outputs = self._llm.chat(conversations, sampling, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - vLLM raises ValueError/RuntimeError/...; isolate below
            log.warning("vllm: batch of %d failed (%s: %s); retrying one by one", len(requests), type(exc).__name__, exc)
            return [self._one(c, s, i) for i, (c, s) in enumerate(zip(conversations, sampling))]
        wall = time.perf_counter() - started
        if len(outputs) != len(requests):
            err = EngineError(f"vllm: expected {len(requests)} outputs, got {len(outputs)}")
            return [err] * len(requests)
        per_request = wall / len(requests)
        results: list[Completion | EngineError] = []
        for output in outputs:
            try:
                results.append(self._completion(output, per_request))
            except EngineError as exc:
                results.append(exc)
        return results

    def _one(self, conversation: list[dict[str, str]], sampling: Any, position: int) -> Completion | EngineError:
        started = time.perf_counter()
        try:
            outputs = self._llm.chat([conversation], [sampling], use_tqdm=False)
            return self._completion(outputs[0], time.perf_counter() - started)
        except EngineError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001
            return EngineError(f"vllm: request {position} of the batch failed ({type(exc).__name__}: {exc})")

    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        result = self.generate_batch([Request(prompt=prompt, seed=seed)], params)[0]
        if isinstance(result, EngineError):
            raise result
        return result

    def model_info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model_name,
            "model_file": None,
            "model_sha256": None,  # weights are a directory of safetensors; the Hub commit identifies them
            "model_revision": self.revision or _hf_commit(self.model_path, self.revision, self.download_dir),
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.llm_kwargs["dtype"],
            "vllm_version": getattr(self._vllm, "__version__", None),
        }

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - best effort; the pod exits right after
                log.debug("vllm: engine shutdown failed", exc_info=True)
        del llm
        gc.collect()
