"""Loading a spec: YAML -> :class:`CorpusSpec`, every problem reported with file, field and expectation."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .corpus import CorpusSpec
from .vocabulary import BUNDLED_MODEL


@dataclass(frozen=True)
class SpecProblem:
    file: str
    field: str
    expected: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.expected}"


class SpecError(ValueError):
    """A spec is invalid. ``problems`` lists every problem found, each naming file and field."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the key itself is named just before
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field: expected one of the section's fields (check the spelling; see CorpusSpec in src/synthcorpus/spec/)"
    if kind in ("literal_error", "enum"):
        msg = msg.replace("Input should be", "expected one of")
    else:  # pydantic's "Input should be ...", "String should match pattern ...", "List should have at least ..."
        msg = msg.replace("String should match pattern", "expected a string matching pattern")
        msg = re.sub(r"^(Input|String|List|Value|Dictionary|Tuple|Set|Decimal|Number) should (be )?", "expected ", msg)
    if "expected" not in msg:
        msg = f"expected a valid value: {msg}"
    return f"{msg} (got {err.get('input')!r})"


def parse_spec(data: Any, file: str = "<spec>", source_path: Path | None = None) -> CorpusSpec:
    """Validate an already-parsed YAML document; raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(file, "(top level)", f"expected a mapping of fields, got {type(data).__name__}")])
    try:
        spec = CorpusSpec.model_validate({**data, "source_path": source_path})
    except ValidationError as exc:
        raise SpecError([SpecProblem(file, _loc(e["loc"]), _describe(e)) for e in exc.errors()]) from None
    problems = _check_files(spec, file) + _check_kubernetes(spec, file)
    if problems:
        raise SpecError(problems)
    return spec


def _check_kubernetes(spec: CorpusSpec, file: str) -> list[SpecProblem]:
    """What the API server would refuse when the pod is created (names, quantities, tolerations), caught at
    load time: a bad value must not break DAG parsing for every corpus."""
    from .kubernetes import kubernetes_problems

    return [
        SpecProblem(file, f"generation.kubernetes.{field}", expected)
        for field, expected in kubernetes_problems(spec.generation.kubernetes)
    ]


def _check_files(spec: CorpusSpec, file: str) -> list[SpecProblem]:
    problems = []
    if spec.outline_path is not None and not spec.outline_path.is_file():
        problems.append(SpecProblem(file, "seeds.outline", f"expected an existing YAML file, {spec.outline_path} not found"))
    local_paths = [(f"seeds.{name}.path", getattr(spec.seeds, name).path)
                   for name in ("web_samples", "instructions") if getattr(spec.seeds, name) is not None]
    decontam = spec.quality.decontamination
    if decontam is not None:
        local_paths += [(f"quality.decontamination.references[{i}].path", r.path) for i, r in enumerate(decontam.references)]
        if decontam.canaries:
            local_paths.append(("quality.decontamination.canaries", decontam.canaries))
    for field, path in local_paths:
        if "://" not in path and not spec.resolve(Path(path)).exists():
            problems.append(SpecProblem(file, field, f"expected an existing file or directory, {spec.resolve(Path(path))} not found"))
    tdir = spec.template_dir
    if not tdir.is_dir():
        problems.append(SpecProblem(file, "prompts.template_dir", f"expected a directory of templates, {tdir} not found"))
    else:
        for lang in spec.prompts.languages:
            for i, fmt in enumerate(spec.prompts.formats):
                if not (tdir / lang / f"{fmt}.j2").is_file():
                    problems.append(
                        SpecProblem(file, f"prompts.formats[{i}]", f"expected a template {tdir / lang / (fmt + '.j2')}")
                    )
    model = spec.generation.model
    if spec.generation.engine == "llamacpp" and model != BUNDLED_MODEL and not spec.resolve(Path(model)).is_file():
        problems.append(
            SpecProblem(file, "generation.model", f"expected '{BUNDLED_MODEL}' or an existing .gguf file, got {model!r}")
        )
    return problems


def load_spec(path: str | os.PathLike[str]) -> CorpusSpec:
    """Read and validate a spec file; raises SpecError naming the file and each bad field."""
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecProblem(file, "(file)", "expected an existing spec file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(file, "(file)", f"expected a readable UTF-8 file ({exc})")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(file, where or "(yaml)", f"expected valid YAML: {problem}")]) from None
    return parse_spec(data, file=file, source_path=p.resolve())


def discover(directory: Path) -> tuple[list[CorpusSpec], dict[str, SpecError]]:
    """Load every ``*.yaml`` spec in a directory: the valid ones, and the errors of the broken ones."""
    good: list[CorpusSpec] = []
    broken: dict[str, SpecError] = {}
    names: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            broken[str(path)] = exc
            continue
        if spec.name in names:
            broken[str(path)] = SpecError(
                [SpecProblem(str(path), "name", f"expected a unique corpus name, {spec.name!r} is used by {names[spec.name]}")]
            )
            continue
        names[spec.name] = str(path)
        good.append(spec)
    return good, broken
