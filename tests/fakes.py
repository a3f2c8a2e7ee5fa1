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


class FakeJudgeEngine(FakeEngine):
    """FakeEngine that also answers the judge's and the rewriter's prompts (include/prompts/*/judge.j2,
    rewrite.j2): a document is scored from its text -- ``low`` when it contains the word "river" before its
    rewrite, 4s otherwise -- and a rewrite is FakeEngine text without "river". ``malformed`` replies that
    many times (per prompt) with text that is not the rubric's format before answering properly."""

    def __init__(self, *args, malformed: int = 0, low: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.malformed, self.low = malformed, low
        self.judge_calls: list[str] = []
        self.rewrite_calls: list[str] = []
        self._bad_left: dict[str, int] = {}

    def generate(self, prompt, params, seed):
        if "educational_value: <0-5>" in prompt:
            self.judge_calls.append(prompt)
            left = self._bad_left.setdefault(prompt, self.malformed)
            if left:
                self._bad_left[prompt] = left - 1
                return Completion("I think this document is quite good overall!", "stop", len(prompt.split()), 9, 0.001)
            document = prompt.split('"""')[-2]  # the last quoted block (the request may quote an extract)
            score = self.low if " river " in f" {document.lower()} " else 4
            text = (f"educational_value: {score}\ncoherence: {score}\nfaithfulness: 4\naudience_fit: 4\n"
                    f"critique: {'mentions the river too often' if score < 4 else 'fine'}")
            return Completion(text, "stop", len(prompt.split()), 20, 0.001)
        if prompt.startswith(("Rewrite this", "Réécrivez", "Schreiben Sie", "Reescriba", "Riscrivi")):
            self.rewrite_calls.append(prompt)
            done = super().generate(prompt, params, seed)
            text = " ".join(w for w in done.text.rstrip(".").split() if w.lower() != "river").capitalize() + "."
            return Completion(text, "stop", done.prompt_tokens, done.completion_tokens, done.latency_s)
        return super().generate(prompt, params, seed)
