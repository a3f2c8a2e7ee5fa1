"""Prompt stage: Jinja templates (one per format, audience-specific instructions inside) and a plan that
balances topics, formats, audiences and languages. Prompt ids are a hash of template name, template
version and every input, so the same spec and seeds always yield the same ids."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from . import storage
from .run import RunContext, StageResult
from .spec import CorpusSpec

LANGUAGE_NAMES = {"en": "English"}
_VERSION = re.compile(r"^\{#-?\s*version:\s*(\S+)\s*-?#\}")


class TemplateError(ValueError):
    """A prompt template is missing, malformed or fails to render; the message names the file."""


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    version: str
    sha256: str


def load_templates(spec: CorpusSpec) -> dict[str, Template]:
    out = {}
    for fmt in spec.prompts.formats:
        path = spec.template_dir / f"{fmt}.j2"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise TemplateError(f"{path}: expected a template for format {fmt!r}") from None
        m = _VERSION.match(raw.decode("utf-8"))
        if not m:
            raise TemplateError(f"{path}: line 1: expected a version header like '{{#- version: 1 -#}}'")
        out[fmt] = Template(fmt, path, m.group(1), hashlib.sha256(raw).hexdigest())
    return out


def _environment(template_dir: Path):
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
        text = env.get_template(template.path.name).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{template.path}: line {exc.lineno}: expected valid Jinja ({exc.message})") from None
    except (jinja2.UndefinedError, KeyError) as exc:
        raise TemplateError(f"{template.path}: rendering failed, {exc} (variables given: {sorted(variables)})") from None
    text = text.strip()
    if not text:
        raise TemplateError(f"{template.path}: expected a non-empty prompt, template rendered to nothing")
    return text


def prompt_id(template: Template, inputs: dict[str, Any]) -> str:
    key = json.dumps({"template": template.name, "version": template.version, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def plan(spec: CorpusSpec, topics: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str, str, int]]:
    """Balanced, deterministic plan of (topic, format, audience, language, variant).

    Item i takes combo i mod C and topic i mod T (each list shuffled once with the plan seed), so
    formats, audiences, languages and topics each stay within one of equal counts; pairs repeat only
    after lcm(T, C) items, and repeats get a new ``variant`` so every prompt id stays unique.
    """
    rng = random.Random(spec.prompts.seed)
    combos = list(product(spec.prompts.formats, spec.prompts.audiences, spec.prompts.languages))
    kept = sorted((t for t in topics if t["kept"]), key=lambda t: t["topic_id"])
    if not kept:
        raise ValueError("prompts: expected at least one kept topic, got none")
    rng.shuffle(kept)
    period = math.lcm(len(kept), len(combos))
    out = []
    for i in range(spec.documents):
        fmt, aud, lang = combos[i % len(combos)]
        out.append((kept[i % len(kept)], fmt, aud, lang, i // period))
    return out


def build_prompts(run: RunContext, topics_uri: str) -> StageResult:
    import pyarrow as pa

    spec = run.spec
    templates = load_templates(spec)
    env = _environment(spec.template_dir)
    topics = storage.read_parquet(topics_uri).to_pylist()
    rows = []
    for topic, fmt, aud, lang, variant in plan(spec, topics):
        template = templates[fmt]
        variables = {
            "topic": topic["label"],
            "subject": topic["subject"],
            "course": topic["course"],
            "extract": topic["extract"],
            "audience": aud,
            "language": lang,
            "language_name": LANGUAGE_NAMES[lang],
        }
        inputs = {"topic_id": topic["topic_id"], "format": fmt, "audience": aud, "language": lang, "variant": variant}
        pid = prompt_id(template, inputs)
        rows.append(
            {
                "prompt_id": pid,
                "topic_id": topic["topic_id"],
                "topic": topic["label"],
                "format": fmt,
                "audience": aud,
                "language": lang,
                "template": template.name,
                "template_version": template.version,
                "variant": variant,
                # Per-row sampling seed: stable per prompt, varied by the spec's generation seed.
                "seed": (int(pid[:8], 16) ^ spec.generation.seed) & 0x7FFFFFFF,
                "prompt": render(env, template, variables),
            }
        )
    uri = run.run_uri("prompts", "prompts.parquet")
    storage.write_parquet(uri, pa.Table.from_pylist(rows))
    stats = {
        "prompts": len(rows),
        "templates": {t.name: {"version": t.version, "sha256": t.sha256} for t in templates.values()},
        "by_format": _count(rows, "format"),
        "by_audience": _count(rows, "audience"),
        "by_language": _count(rows, "language"),
    }
    return StageResult("prompts", {"prompts": uri}, stats).save(run)


def _count(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + 1
    return dict(sorted(out.items()))
