"""Test doubles for unit tests only; every capability also has a test on the real component."""

from __future__ import annotations

import hashlib

from synthcorpus.engines import Completion, Engine, SamplingParams


VOCAB = (
    "the people who live near the river often walk along its banks in the morning and they say that the water "
    "has changed over many years because farms and towns have grown while the forest became smaller and the "
    "children of the village learn about birds fish plants and the weather from their teachers and parents"
).split()


class FakeEngine(Engine):
    """Deterministic text per (prompt, seed); counts calls so tests can see what was (re)generated."""

    name = "fake"

    def __init__(self, words: int = 80, finish_reason: str = "stop", same_text: bool = False):
        self.words, self.finish_reason, self.same_text = words, finish_reason, same_text
        self.calls: list[str] = []

    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        self.calls.append(prompt)
        key = "same" if self.same_text else f"{prompt}|{seed}"
        # English words (language id must see English), in an order unique to the prompt and seed, from a
        # fresh digest every 32 words: a text that loops would (rightly) fail the Gopher repetition filters.
        stream = b"".join(hashlib.sha256(f"{key}|{block}".encode()).digest() for block in range(self.words // 32 + 1))
        words = [VOCAB[stream[i] % len(VOCAB)] for i in range(self.words)]
        text = " ".join(words).capitalize() + "."
        return Completion(text, self.finish_reason, len(prompt.split()), self.words, 0.001)

    def model_info(self) -> dict:
        return {"engine": "fake", "model": "fake-model", "model_file": "fake.gguf", "model_sha256": "0" * 64, "model_bytes": 0}
