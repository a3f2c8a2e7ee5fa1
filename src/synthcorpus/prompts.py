"""Prompt stage: Jinja templates ``<template_dir>/<language>/<format>.j2`` (audience-specific instructions
inside, written natively per language) and a sampling plan that balances topics, formats, audiences and
languages. Prompt ids are a hash of template name, template version and every input, so the same spec,
seeds and topics always yield the same ids."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from itertools import count, islice, product
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .spec import CorpusSpec

_VERSION = re.compile(r"^\{#-?\s*version:\s*(\S+)\s*-?#\}")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class TemplateError(ValueError):
    """A prompt template is missing, malformed or fails to render; the message names the file."""


@dataclass(frozen=True)
class Template:
    name: str  # "<language>/<format>"
    path: Path
    version: str
    sha256: str


def load_template(template_dir: Path, name: str) -> Template:
    path = template_dir / f"{name}.j2"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TemplateError(f"{path}: expected a template file") from None
    m = _VERSION.match(raw.decode("utf-8"))
    if not m:
        raise TemplateError(f"{path}: line 1: expected a version header like '{{#- version: 1 -#}}'")
    return Template(name, path, m.group(1), hashlib.sha256(raw).hexdigest())


def load_templates(spec: CorpusSpec) -> dict[tuple[str, str], Template]:
    """Every (language, format) template the spec needs."""
    return {
        (lang, fmt): load_template(spec.template_dir, f"{lang}/{fmt}")
        for lang in spec.prompts.languages
        for fmt in spec.prompts.formats
    }


def environment(template_dir: Path) -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


def render(env: Any, template: Template, variables: dict[str, Any]) -> str:
    import jinja2

    try:
        text = env.get_template(f"{template.name}.j2").render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{template.path}: line {exc.lineno}: expected valid Jinja ({exc.message})") from None
    except (jinja2.UndefinedError, KeyError, TypeError) as exc:
        raise TemplateError(f"{template.path}: expected the template to render with the variables given "
                            f"({', '.join(sorted(variables))}): {exc}") from None
    text = text.strip()
    if not text:
        raise TemplateError(f"{template.path}: expected a non-empty prompt, template rendered to nothing")
    return text


def truncate_tokens(text: str, budget: int) -> str:
    """The text cut after ``budget`` word/punctuation tokens (original spacing kept), with an ellipsis."""
    for i, m in enumerate(_TOKEN.finditer(text)):
        if i == budget:
            return text[: m.start()].rstrip() + " …"
    return text


def prompt_id(template: Template, inputs: dict[str, Any]) -> str:
    key = json.dumps({"template": template.name, "version": template.version, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PlanItem:
    topic_id: str
    format: str
    audience: str
    language: str
    variant: int  # how many times the whole topic x combination space was used before this item


def iter_plan(spec: CorpusSpec, topic_ids: list[str]) -> Iterator[PlanItem]:
    """Balanced, deterministic, endless plan over topics x (format, audience, language).

    Item i takes topic i mod T and combination (i + k) mod C, where k counts completed lcm(T, C) periods:
    each period pairs every topic with C/g combinations (g = gcd(T, C)) and each shift k reaches pairs not
    seen before, so the T*C space is sampled without replacement until it is exhausted (then ``variant``
    goes up). Topic and combination counts never differ by more than one within a period. Item i is the
    same however many items are taken: a refresh continues the plan where the last version stopped.
    """
    if not topic_ids:
        raise ValueError("prompts: expected at least one kept topic, got none")
    rng = random.Random(spec.prompts.seed)
    topics = sorted(topic_ids)
    rng.shuffle(topics)
    combos = list(product(spec.prompts.formats, spec.prompts.audiences, spec.prompts.languages))
    rng.shuffle(combos)
    n_topics, n_combos = len(topics), len(combos)
    period = math.lcm(n_topics, n_combos)
    space = n_topics * n_combos
    for i in count():
        k = (i % space) // period
        fmt, aud, lang = combos[(i + k) % n_combos]
        yield PlanItem(topics[i % n_topics], fmt, aud, lang, i // space)


def plan(spec: CorpusSpec, topic_ids: list[str]) -> list[PlanItem]:
    """The first ``spec.documents`` items of :func:`iter_plan`."""
    return list(islice(iter_plan(spec, topic_ids), spec.documents))


@dataclass
class PromptCandidate:
    """One item of the prompt plan, identified (``row["prompt_id"]``) but not rendered yet: a refresh skips
    most candidates (published, retired) and renders only the prompts it generates."""

    position: int  # index in the endless plan
    row: dict[str, Any]
    template: Template
    variables: dict[str, Any]


def prompt_variables(seed: dict[str, Any], topic: str | None, audience: str, style_index: int,
                     language: str) -> dict[str, Any]:
    """What a format template is rendered with (``extract`` is truncated when rendered)."""
    return {"extract": seed["text"], "seed_kind": seed["kind"], "topic": topic, "subject": seed.get("subject"),
            "course": seed.get("course"), "unit": seed.get("unit"), "audience": audience,
            "style_index": style_index, "language": language}


class PromptMatrix:
    """The prompt plan of a spec over its seeds and topics, enumerated lazily from the first item."""

    def __init__(self, spec: CorpusSpec, seed_rows: list[dict[str, Any]], topic_rows: list[dict[str, Any]],
                 assignments: list[dict[str, Any]]):
        self.spec = spec
        self.templates = load_templates(spec)
        self.env = environment(spec.template_dir)
        self.seeds = {s["seed_id"]: s for s in seed_rows}
        self.topics = {t["topic_id"]: t for t in topic_rows}
        pools: dict[str, list[str]] = {}
        for a in assignments:
            if self.topics[a["topic_id"]]["kept"]:
                pools.setdefault(a["topic_id"], []).append(a["seed_id"])
        rng = random.Random(spec.prompts.seed)
        for pool in pools.values():
            pool.sort()
            rng.shuffle(pool)
        self.pools = pools
        self._rng_state = rng.getstate()

    @property
    def topics_used(self) -> int:
        return len(self.pools)

    def fingerprint(self) -> str:
        """What the plan's items depend on: when it changes, positions mean other prompts."""
        key = {"prompts": self.spec.canonical()["prompts"], "generation_seed": self.spec.generation.seed,
               "pools": self.pools, "templates": {"/".join(k): t.sha256 for k, t in sorted(self.templates.items())},
               "seeds": sorted((k, hashlib.sha256(v["text"].encode()).hexdigest()[:16]) for k, v in self.seeds.items())}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def candidates(self) -> Iterator[PromptCandidate]:
        spec, rng = self.spec, random.Random()
        rng.setstate(self._rng_state)
        used: dict[str, int] = {}
        cue_counter: dict[tuple[str, str], int] = {}
        for i, item in enumerate(iter_plan(spec, list(self.pools))):
            topic = self.topics[item.topic_id]
            pool = self.pools[item.topic_id]
            seed = self.seeds[pool[used.get(item.topic_id, 0) % len(pool)]]
            used[item.topic_id] = used.get(item.topic_id, 0) + 1
            # Instruction seeds carry their own subject; naming a topic only helps outline and web seeds.
            topic_in_prompt = seed["kind"] != "instruction" and rng.random() < spec.prompts.topic_probability
            style_index = cue_counter.get((item.format, item.language), 0)
            cue_counter[(item.format, item.language)] = style_index + 1
            template = self.templates[(item.language, item.format)]
            variables = prompt_variables(seed, topic["label"] if topic_in_prompt else None, item.audience, style_index,
                                         item.language)
            inputs = {
                "seed_id": seed["seed_id"], "topic_id": item.topic_id, "topic_in_prompt": topic_in_prompt,
                "format": item.format, "audience": item.audience, "language": item.language,
                "style_index": style_index, "variant": item.variant,
            }
            pid = prompt_id(template, inputs)
            row = {
                "prompt_id": pid,
                "seed_id": seed["seed_id"],
                "seed_kind": seed["kind"],
                "topic_id": item.topic_id,
                "topic": topic["label"],
                "topic_in_prompt": topic_in_prompt,
                "format": item.format,
                "audience": item.audience,
                "language": item.language,
                "template": template.name,
                "template_version": template.version,
                "style_index": style_index,
                "variant": item.variant,
                "plan_position": i,
                # Per-row sampling seed: stable per prompt, varied by the spec's generation seed.
                "seed": (int(pid[:8], 16) ^ spec.generation.seed) & 0x7FFFFFFF,
            }
            yield PromptCandidate(i, row, template, variables)

    def render(self, candidate: PromptCandidate) -> dict[str, Any]:
        """The candidate's prompt row with its rendered prompt."""
        variables = {**candidate.variables,
                     "extract": truncate_tokens(candidate.variables["extract"], self.spec.prompts.extract_max_tokens)}
        return {**candidate.row, "prompt": render(self.env, candidate.template, variables)}


def build_rows(spec: CorpusSpec, seed_rows: list[dict[str, Any]], topic_rows: list[dict[str, Any]],
               assignments: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Template], int]:
    """The first ``spec.documents`` prompt rows of a corpus (ids, provenance, rendered prompt), the templates
    used and the number of topics that received prompts: seeds of kept topics, spread over the plan of
    format x audience x language."""
    matrix = PromptMatrix(spec, seed_rows, topic_rows, assignments)
    rows = [matrix.render(c) for c in islice(matrix.candidates(), spec.documents)]
    return rows, matrix.templates, matrix.topics_used
