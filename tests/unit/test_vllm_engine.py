"""VLLMEngine against a fake ``vllm`` module with the real API's shape (LLM, SamplingParams, RequestOutput).

The fake mirrors vLLM's offline API: ``LLM(model=..., **engine_args)``,
``LLM.chat(messages: list[list[dict]], sampling_params: list[SamplingParams], use_tqdm=...)`` returning one
``RequestOutput`` per conversation in input order, ``RequestOutput.prompt_token_ids`` and
``.outputs[0].text/.token_ids/.finish_reason``.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from synthcorpus.engines import EngineError, Request, SamplingParams, load_engine
from synthcorpus.spec import parse_spec
from tests.conftest import tiny_spec_dict


@dataclass
class FakeSamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None


@dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    cumulative_logprob: float | None = None


@dataclass
class FakeRequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput] = field(default_factory=list)
    finished: bool = True


class FakeLLM:
    instances: list[FakeLLM] = []
    reply = "reply to {prompt} (seed {seed})"

    def __init__(self, model: str, **kwargs):
        self.model = model
        self.kwargs = {"model": model, **kwargs}
        self.chat_calls: list[tuple[list, list, dict]] = []
        self.reject: set[str] = set()  # prompts that make chat() raise, as vLLM does for too-long prompts
        FakeLLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True, **kwargs):
        self.chat_calls.append((messages, sampling_params, {"use_tqdm": use_tqdm, **kwargs}))
        assert isinstance(messages, list) and all(isinstance(m, list) for m in messages)
        assert isinstance(sampling_params, list) and len(sampling_params) == len(messages)
        for conv in messages:
            if conv[-1]["content"] in self.reject:
                raise ValueError("The decoder prompt (length 9000) is longer than the maximum model length")
        out = []
        for i, (conv, sp) in enumerate(zip(messages, sampling_params)):
            prompt = conv[-1]["content"]
            n = min(sp.max_tokens, 3 + len(prompt) % 5)
            reason = "length" if "long" in prompt else "stop"
            if reason == "length":
                n = sp.max_tokens
            out.append(
                FakeRequestOutput(
                    request_id=str(len(self.chat_calls) * 100 + i),
                    prompt=None,
                    prompt_token_ids=list(range(len(prompt.split()) + 4)),  # + chat template tokens
                    outputs=[FakeCompletionOutput(0, self.reply.format(prompt=prompt, seed=sp.seed), list(range(n)), reason)],
                )
            )
        return out


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    module.RequestOutput = FakeRequestOutput
    module.__version__ = "0.0.0-fake"
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances = []
    FakeLLM.reply = "reply to {prompt} (seed {seed})"
    return module


def _cfg(tmp_path, **vllm) -> dict:
    spec = parse_spec(
        tiny_spec_dict(
            **{
                "generation.engine": "vllm",
                "generation.model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                "generation.seed": 42,
                "generation.vllm": {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_model_len": 4096,
                                    "enable_prefix_caching": False, "dtype": "bfloat16", **vllm},
            }
        )
    )
    return {**spec.canonical()["generation"], "base_dir": str(tmp_path), "run_id": "r1"}


PARAMS = SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, repeat_penalty=1.1)


def test_llm_constructed_from_the_spec(fake_vllm, tmp_path):
    engine = load_engine(_cfg(tmp_path))
    assert engine.name == "vllm"
    (llm,) = FakeLLM.instances
    assert llm.kwargs == {
        "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "enable_prefix_caching": False,
        "dtype": "bfloat16",
        "seed": 42,
    }
    info = engine.model_info()
    assert info["engine"] == "vllm" and info["model"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert info["model_file"] is None and info["model_sha256"] is None
    assert info["tensor_parallel_size"] == 2 and info["vllm_version"] == "0.0.0-fake"
    assert engine.preferred_batch == 256  # generation.py sends this many requests per generate_batch


def test_batch_size_from_config(fake_vllm, tmp_path):
    cfg = _cfg(tmp_path)
    cfg["vllm"] = {**cfg["vllm"], "batch_size": 64}  # VLLMSpec may not have the field yet
    assert load_engine(cfg).preferred_batch == 64


def test_local_model_dir_resolves_against_the_spec_dir(fake_vllm, tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    cfg = {**_cfg(tmp_path), "model": "models/mine"}
    engine = load_engine(cfg)
    assert FakeLLM.instances[0].kwargs["model"] == str((tmp_path / "models" / "mine").resolve())
    assert engine.model_info()["model"] == "models/mine"


def test_one_chat_call_per_batch_with_per_request_seeds(fake_vllm, tmp_path):
    engine = load_engine(_cfg(tmp_path))
    requests = [Request(prompt=f"write about topic {i}", seed=1000 + i) for i in range(5)]
    results = engine.generate_batch(requests, PARAMS)

    (llm,) = FakeLLM.instances
    assert len(llm.chat_calls) == 1
    messages, sampling, kwargs = llm.chat_calls[0]
    assert kwargs["use_tqdm"] is False
    assert messages == [[{"role": "user", "content": r.prompt}] for r in requests]
    assert [s.seed for s in sampling] == [1000, 1001, 1002, 1003, 1004]
    for s in sampling:
        assert (s.max_tokens, s.temperature, s.top_p, s.repetition_penalty) == (32, 0.7, 0.9, 1.1)

    assert [r.text for r in results] == [f"reply to {r.prompt} (seed {r.seed})" for r in requests]  # order kept
    for r, c in zip(requests, results):
        assert c.finish_reason == "stop"
        assert c.prompt_tokens == len(r.prompt.split()) + 4
        assert c.completion_tokens == 3 + len(r.prompt) % 5
        assert c.latency_s >= 0
    assert len({c.latency_s for c in results}) == 1  # batch wall time / n, the same for each


def test_length_finish_reason_and_single_generate(fake_vllm, tmp_path):
    engine = load_engine(_cfg(tmp_path))
    c = engine.generate("a long essay", PARAMS, seed=7)
    assert c.finish_reason == "length" and c.completion_tokens == 32 and c.text.endswith("(seed 7)")
    assert len(FakeLLM.instances[0].chat_calls) == 1


def test_rejected_batch_isolates_the_bad_request(fake_vllm, tmp_path):
    engine = load_engine(_cfg(tmp_path))
    llm = FakeLLM.instances[0]
    llm.reject = {"too big"}
    requests = [Request("fine one", 1), Request("too big", 2), Request("fine two", 3)]
    results = engine.generate_batch(requests, PARAMS)
    assert results[0].text == "reply to fine one (seed 1)"
    assert isinstance(results[1], EngineError) and "maximum model length" in str(results[1])
    assert results[2].text == "reply to fine two (seed 3)"
    assert len(llm.chat_calls) == 1 + 3  # the batch, then one call per request


def test_empty_batch_makes_no_call(fake_vllm, tmp_path):
    engine = load_engine(_cfg(tmp_path))
    assert engine.generate_batch([], PARAMS) == []
    assert FakeLLM.instances[0].chat_calls == []


def test_without_vllm_load_engine_names_the_gpu_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(EngineError, match=r"needs the GPU extra: pip install 'synthcorpus\[gpu\]'"):
        load_engine(_cfg(tmp_path))


def test_load_failure_is_an_engine_error(fake_vllm, monkeypatch, tmp_path):
    def boom(**kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(fake_vllm, "LLM", boom)
    with pytest.raises(EngineError, match="could not load model .*CUDA out of memory"):
        load_engine(_cfg(tmp_path))


def test_worker_generates_a_shard_through_vllm(fake_vllm, tmp_path):
    """generate_shard -> load_engine -> VLLMEngine: one chat call for the shard, rows written in order."""
    import json

    import pyarrow as pa

    from synthcorpus import storage
    from synthcorpus.generation import META_KEY, generate_shard
    from synthcorpus.layout import RunLayout
    from synthcorpus.stages.generate import work_unit

    FakeLLM.reply = ("Here is a clear and friendly explanation written for curious readers, "
                     "covering {prompt} step by step with simple everyday examples.")
    cfg = {**_cfg(tmp_path), "max_attempts": 1, "quality": {"min_words": 5}}
    rows = [{"prompt_id": f"p{i}", "prompt": f"prompt {i}", "seed": 100 + i, "language": "en"} for i in range(6)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({META_KEY: json.dumps(cfg).encode()})
    unit = work_unit(RunLayout((tmp_path / "storage").as_uri(), "tiny", "r"), 0)
    in_uri, out_uri = unit["input"], unit["output"]
    storage.write_parquet(in_uri, table)

    stats = generate_shard(in_uri, out_uri, unit["parts"])
    (llm,) = FakeLLM.instances
    assert len(llm.chat_calls) == 1 and [s.seed for s in llm.chat_calls[0][1]] == [100, 101, 102, 103, 104, 105]
    out = storage.read_parquet(out_uri).to_pylist()
    assert [r["prompt_id"] for r in out] == [f"p{i}" for i in range(6)]
    assert all(r["text"].startswith("Here is a clear") and r["model"] == cfg["model"] for r in out)
    assert stats["rows"] == 6
