"""The preflight: everything about a spec that can be checked before compute is spent.

``load_spec`` (DAG parsing) checks what is cheap: fields, the schedule, that named files exist. The preflight
also opens them: every seed source and reference set is read in its configured format with its configured
columns (the first rows of a seed source, every item of a reference set), the outline is read against its
schema, every template the run will render (formats, and the judge's, rewriter's and topic labeller's when
used) renders with sample contexts covering every seed kind, audience and language, the engines' settings
resolve (an OpenAI-compatible server URL), and the storage URI opens. ``synthcorpus validate`` runs it, and so
does the first task of every run (``history``): a bad reference file fails the run in its first seconds, not in
``decontaminate`` after generation was paid for.

Not a stage (it has no marker): a function of the spec that returns every problem found, each naming the
file, the spec field and what was expected (:class:`synthcorpus.spec.SpecProblem`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..spec import CorpusSpec, SpecError, SpecProblem

_FIELD = re.compile(r"^[A-Za-z_][\w.\[\]]*$")
SAMPLE_TOPIC = "photosynthesis in plants"
SAMPLE_TEXT = ("Plants turn light into chemical energy. Chlorophyll absorbs red and blue light, and the energy "
               "splits water into oxygen, protons and electrons. ") * 4


def check(spec: CorpusSpec) -> None:
    """Raise :class:`SpecError` listing every problem :func:`problems` finds."""
    found = problems(spec)
    if found:
        raise SpecError(found)


def problems(spec: CorpusSpec) -> list[SpecProblem]:
    file = str(spec.source_path) if spec.source_path else "<spec>"
    found: list[SpecProblem] = []
    kinds = _seeds(spec, file, found)
    _references(spec, file, found)
    _templates(spec, file, found, kinds)
    _engines(spec, file, found)
    _storage(spec, file, found)
    return found


def as_problem(exc: BaseException, field: str, spec_file: str) -> SpecProblem:
    """An error message "<file>: <field>: <expected>" (how seed, reference and template errors are worded) as a
    SpecProblem; a message that names no file is the spec file's."""
    msg = str(exc)
    head, sep, rest = msg.partition(": ")
    if sep and ("/" in head or "://" in head or head.endswith((".yaml", ".yml", ".j2", ".jsonl", ".parquet"))):
        inner, sep2, expected = rest.partition(": ")
        if sep2 and _FIELD.match(inner):
            return SpecProblem(head, inner, expected)
        return SpecProblem(head, field, rest)
    return SpecProblem(spec_file, field, msg)


def _seeds(spec: CorpusSpec, file: str, found: list[SpecProblem]) -> list[str]:
    """Check every seed source; return the seed kinds the run will have (for the template contexts)."""
    from ..seeds import SOURCE_KINDS, SeedError, peek_source, read_outline

    kinds = []
    if spec.outline_path is not None:
        try:
            read_outline(spec.outline_path)
            kinds.append("outline")
        except SeedError as exc:
            found.append(as_problem(exc, "seeds.outline", file))
    for name, kind in SOURCE_KINDS.items():
        source = getattr(spec.seeds, name)
        if source is None:
            continue
        try:
            if peek_source(source, spec.resolve_uri(source.path), f"seeds.{name}") == 0:
                found.append(SpecProblem(spec.resolve_uri(source.path), f"seeds.{name}.path",
                                         "expected at least one row of texts, found none"))
            kinds.append(kind)
        except SeedError as exc:
            found.append(as_problem(exc, f"seeds.{name}", file))
        except Exception as exc:  # storage: credentials, endpoint, permissions
            found.append(SpecProblem(spec.resolve_uri(source.path), f"seeds.{name}.path",
                                     f"expected a readable source ({type(exc).__name__}: {exc})"))
    return kinds


def _references(spec: CorpusSpec, file: str, found: list[SpecProblem]) -> None:
    from ..quality.decontam import FIELD, load_references, read_canaries
    from ..seeds import SeedError

    cfg = spec.quality.decontamination
    if cfg is None:
        return
    try:  # as the decontaminate stage loads them (stages.decontaminate.reference_index)
        load_references([{**r.model_dump(), "path": spec.resolve_uri(r.path)} for r in cfg.references], FIELD)
    except SeedError as exc:
        found.append(as_problem(exc, FIELD, file))
    if cfg.canaries:
        try:
            read_canaries(spec.resolve_uri(cfg.canaries))
        except SeedError as exc:
            found.append(as_problem(exc, "quality.decontamination.canaries", file))


def _sample_seeds(kinds: list[str]) -> list[dict[str, Any]]:
    """One seed row per kind, shaped as the seeds stage writes them."""
    rows = {
        "outline": {"text": "Photosynthesis: how plants make sugar from light, water and carbon dioxide.", "kind": "outline",
                    "subject": "Biology", "course": "Plant biology", "unit": "Photosynthesis"},
        "web": {"text": SAMPLE_TEXT, "kind": "web", "subject": None, "course": None, "unit": None},
        "instruction": {"text": "Write a story about a child who grows a bean plant.", "kind": "instruction",
                        "subject": None, "course": None, "unit": None},
    }
    return [rows[k] for k in kinds or ["outline"]]


def _templates(spec: CorpusSpec, file: str, found: list[SpecProblem], kinds: list[str]) -> None:
    from ..prompts import TemplateError, environment, load_template, prompt_variables, render, truncate_tokens

    tdir = spec.template_dir
    if not tdir.is_dir():
        return  # load_spec reported it
    env = environment(tdir)
    seeds = _sample_seeds(kinds)
    for lang in spec.prompts.languages:
        for i, fmt in enumerate(spec.prompts.formats):
            field = f"prompts.formats[{i}]"
            try:
                template = load_template(tdir, f"{lang}/{fmt}")
                for seed in seeds:
                    for topic in (None, SAMPLE_TOPIC):
                        for audience in spec.prompts.audiences:
                            for style_index in range(3):
                                variables = prompt_variables(seed, topic, audience, style_index, lang)
                                variables["extract"] = truncate_tokens(variables["extract"], spec.prompts.extract_max_tokens)
                                render(env, template, variables)
            except TemplateError as exc:
                found.append(as_problem(exc, field, file))
            except Exception as exc:  # a template that raises while rendering (a filter, a division...)
                found.append(SpecProblem(str(tdir / lang / f"{fmt}.j2"), field,
                                         f"expected the template to render ({type(exc).__name__}: {exc})"))
    if spec.judge.enabled:
        _judge_templates(spec, found)
    if spec.topics.labeler == "engine":
        from ..topics.labelling import LABEL_TEMPLATE, load_label_template, render_label_prompt

        try:
            render_label_prompt(load_label_template(tdir), [SAMPLE_TEXT] * spec.topics.label_samples)
        except (TemplateError, Exception) as exc:
            found.append(SpecProblem(str(tdir / LABEL_TEMPLATE), "topics.labeler",
                                     f"expected a topic-label template that renders ({exc})"))


def _judge_templates(spec: CorpusSpec, found: list[SpecProblem]) -> None:
    import jinja2

    from ..judge import Verdict
    from .judge import renderers

    tdir = spec.template_dir
    missing = [str(tdir / lang / f"{name}.j2") for lang in spec.prompts.languages for name in ("judge", "rewrite")
               if not (tdir / lang / f"{name}.j2").is_file()]
    for path in missing:
        found.append(SpecProblem(path, "judge.enabled", "expected a judge template (judge.j2 and rewrite.j2 per language "
                                                        "in prompts.template_dir) when the judge is enabled"))
    if missing:
        return
    try:
        render_judge, render_rewrite = renderers(spec)
    except jinja2.TemplateSyntaxError as exc:
        found.append(SpecProblem(str(exc.filename or tdir), "judge.enabled", f"line {exc.lineno}: expected valid Jinja ({exc.message})"))
        return
    verdict = Verdict(scores={"educational_value": 2, "coherence": 3}, critique="Too vague; add an example.")
    for lang in spec.prompts.languages:
        row = {"language": lang, "prompt": "Write a textbook unit about photosynthesis.", "topic": SAMPLE_TOPIC,
               "format": spec.prompts.formats[0], "audience": spec.prompts.audiences[0]}
        for name, call in (("judge", lambda: render_judge(row, SAMPLE_TEXT)),
                           ("rewrite", lambda: render_rewrite(row, SAMPLE_TEXT, verdict))):
            path = str(Path(tdir) / lang / f"{name}.j2")
            try:
                if not call():
                    found.append(SpecProblem(path, "judge.enabled", "expected a non-empty prompt, the template rendered to nothing"))
            except Exception as exc:
                found.append(SpecProblem(path, "judge.enabled", f"expected the template to render ({type(exc).__name__}: {exc})"))


def _engines(spec: CorpusSpec, file: str, found: list[SpecProblem]) -> None:
    """The OpenAI-compatible server URL resolves (from the spec, the Airflow connection or $OPENAI_BASE_URL)."""
    from ..engines.base import EngineError
    from ..engines.openai_engine import resolve_endpoint

    uses = []
    if spec.generation.engine == "openai":
        uses.append(("generation.openai", spec.generation.openai.model_dump()))
    if spec.judge.enabled and spec.judge.engine == "openai":
        cfg = {**spec.generation.openai.model_dump(), **({"base_url": spec.judge.base_url} if spec.judge.base_url else {})}
        uses.append(("judge.base_url", cfg))
    for field, cfg in uses:
        try:
            resolve_endpoint(cfg, get_connection=_connection_unchecked)
        except EngineError as exc:
            msg = str(exc)
            head, sep, rest = msg.partition(": ")
            found.append(SpecProblem(file, head if sep and _FIELD.match(head) else field, rest if sep else msg))


class _Deferred:
    """An Airflow connection is looked up on the worker, where it is defined: here its URL counts as set."""

    host = "http://connection.invalid"
    schema = port = password = login = None


def _connection_unchecked(conn_id: str) -> Any:
    return _Deferred()


def _storage(spec: CorpusSpec, file: str, found: list[SpecProblem]) -> None:
    from .. import storage

    uri = spec.storage_uri()
    try:
        storage.exists(storage.join(uri, spec.name))
    except Exception as exc:
        found.append(SpecProblem(file, "storage.uri", f"expected storage that can be opened, {uri}: "
                                                      f"{type(exc).__name__}: {exc}"))
