"""The run layout: the one place that spells storage paths.

::

    {storage}/{corpus}/latest.json                          the published version readers start from
    {storage}/{corpus}/quarantine/{run_id}.json             gate reports of runs that failed the gate or were
                                                            not approved (with the decision)
    {storage}/{corpus}/versions/{version}/...               published releases (manifest.json last)
    {storage}/{corpus}/index/{version}/...                  the published-documents index segment of a version
                                                            (what refreshes dedup against; see quality.published_index)
    {storage}/{corpus}/runs/{run_id}/spec.json              the spec pinned at run start
    {storage}/{corpus}/runs/{run_id}/lineage.json           what produced the run
    {storage}/{corpus}/runs/{run_id}/budget/generate-shard-00000.json
                                                            running totals of one generating shard (run budget)
    {storage}/{corpus}/runs/{run_id}/{stage}/               one folder per stage, named like its DAG task
        _stage.commit.json                                  an unmapped stage's marker (outputs + stats)
        shard-00000.parquet, shard-00000.commit.json        a mapped stage's shard and its marker
        shard-00000.parts/part-00000.parquet                checkpoint parts of a shard in progress
        shard-00000/...                                     a shard's own files (e.g. its GX results)
        removed.parquet, removed/shard-00000.parquet        rows a stage removed, with their reason
        <named outputs>                                     see OUTPUTS

Stage modules ask the layout for paths by stage and name; nothing else builds a storage path from a
literal or parses a shard index out of a URI. Light on purpose (no pyarrow): imported at DAG parse time.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import CorpusSpec

# Named outputs of each stage (stage -> output name -> file or folder under the stage folder).
OUTPUTS: dict[str, dict[str, str]] = {
    "history": {"base": "base.json"},
    "seeds": {"seeds": "seeds.parquet"},
    "topics": {"topics": "topics.parquet", "assignments": "assignments.parquet"},
    "prompts": {"prompts": "prompts.parquet", "reserve": "reserve.parquet", "diversity": "diversity.json"},
    "near_dedup": {"clusters": "clusters.parquet"},
    "top_up": {"surplus": "surplus.parquet"},
    "quality_gate": {"report": "report.json", "validation": "validation.json", "report_html": "report.html",
                     "data_docs": "data_docs", "diversity": "diversity.json",
                     "profile": "profile.json"},
    # publish.approval: the human-in-the-loop request and every decision about the run (stages.approval)
    "approval": {"request": "request.json", "decisions": "decisions.json"},
}
# Files inside one shard's own folder (``{stage}/shard-00000/...``).
SHARD_FILES = {"result": "result.json", "validation": "validation.json"}

SHARD_PREFIX = "shard-"
MARKER_SUFFIX = ".commit.json"
STAGE_MARKER = "_stage" + MARKER_SUFFIX
_PART = re.compile(r"part-(\d{5,})\.parquet$")


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])


def shard_name(index: int) -> str:
    """``shard-00000``: the name of shard ``index`` in every mapped stage, and its task label in the UI."""
    return f"{SHARD_PREFIX}{int(index):05d}"


def shard_name_template(index_expression: str) -> str:
    """A Jinja template rendering :func:`shard_name` of an index known only at run time (e.g. a mapped
    operator's ``map_index_template`` reading the index from a pod label)."""
    return "{{ '" + SHARD_PREFIX + "%05d' | format((" + index_expression + ") | int) }}"


def data_file(index: int, total: int) -> str:
    """A published data file, relative to its version (the HF ``data_files`` pattern ``data/train-*.parquet``)."""
    return f"data/train-{index:05d}-of-{total:05d}.parquet"


DATA_FILES_PATTERN = "data/train-*.parquet"
MANIFEST = "manifest.json"  # a version exists once its manifest does
LINEAGE = "lineage.json"  # what produced a run (in the run, and a copy in its version)


def sanitize_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+'; keep a path-safe, readable form."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    if not clean:
        raise ValueError(f"run id {run_id!r}: expected at least one letter or digit")
    return clean[:120]


@dataclass(frozen=True)
class RunLayout:
    storage_uri: str
    corpus: str
    run_id: str

    @classmethod
    def of(cls, spec: "CorpusSpec", run_id: str) -> RunLayout:
        """The layout of run ``run_id`` (sanitized) of a corpus."""
        return cls(spec.storage_uri(), spec.name, sanitize_run_id(run_id))

    # ------------------------------------------------------------------ corpus level
    @property
    def corpus_uri(self) -> str:
        return join(self.storage_uri, self.corpus)

    @property
    def latest(self) -> str:
        return join(self.corpus_uri, "latest.json")

    @property
    def quarantine(self) -> str:
        return join(self.corpus_uri, "quarantine", f"{self.run_id}.json")

    @property
    def version(self) -> str:
        # One version per run id: re-publishing the same run is idempotent.
        return self.run_id

    @property
    def versions_root(self) -> str:
        """The folder holding one folder per published version."""
        return join(self.corpus_uri, "versions")

    @property
    def runs_root(self) -> str:
        """The folder holding one folder per run."""
        return join(self.corpus_uri, "runs")

    def version_uri(self, rel: str = "") -> str:
        """The version of this run, or a file in it (``rel`` as listed in its manifest)."""
        base = join(self.versions_root, self.version)
        return join(base, rel) if rel else base

    def version_file(self, version: str, rel: str) -> str:
        """A file of any published version of the corpus (``rel`` as listed in that version's manifest)."""
        return join(self.versions_root, version, rel)

    def manifest_of(self, version: str) -> str:
        return self.version_file(version, MANIFEST)

    @property
    def manifest(self) -> str:
        return self.version_uri(MANIFEST)

    @property
    def index_root(self) -> str:
        """Where the published-documents index keeps one segment per published version."""
        return join(self.corpus_uri, "index")

    def index_segment(self, version: str) -> str:
        return join(self.index_root, version)

    def retry(self, version: str) -> str:
        """Prompts a version tried and did not publish, with their failure counts (what the next refresh
        retries first, or retires)."""
        return join(self.index_segment(version), "retry.parquet")

    @property
    def dataset_card(self) -> str:
        return self.version_uri("README.md")

    @property
    def version_lineage(self) -> str:
        return self.version_uri(LINEAGE)

    # ------------------------------------------------------------------ run level
    @property
    def run_uri(self) -> str:
        return join(self.runs_root, self.run_id)

    @property
    def spec_snapshot(self) -> str:
        return join(self.run_uri, "spec.json")

    @property
    def lineage(self) -> str:
        return join(self.run_uri, LINEAGE)

    @property
    def budget_dir(self) -> str:
        """Running totals of every generating shard of the run, one small JSON each (the run-wide budget)."""
        return join(self.run_uri, "budget")

    def budget_entry(self, stage: str, index: int) -> str:
        return join(self.budget_dir, f"{stage}-{shard_name(index)}.json")

    # ------------------------------------------------------------------ stage level
    def stage_dir(self, stage: str) -> str:
        return join(self.run_uri, stage)

    def output(self, stage: str, name: str) -> str:
        """A named output of a stage (see OUTPUTS)."""
        try:
            return join(self.stage_dir(stage), OUTPUTS[stage][name])
        except KeyError:
            raise KeyError(f"the run layout has no output {name!r} for stage {stage!r}") from None

    def marker(self, stage: str, shard: int | None = None) -> str:
        """Where a stage (``shard=None``) or one shard of a mapped stage commits its marker."""
        name = STAGE_MARKER if shard is None else shard_name(shard) + MARKER_SUFFIX
        return join(self.stage_dir(stage), name)

    def shard(self, stage: str, index: int) -> str:
        """Shard ``index`` of a stage's documents (a Parquet file)."""
        return join(self.stage_dir(stage), shard_name(index) + ".parquet")

    def shard_dir(self, stage: str, index: int, name: str = "") -> str:
        """Shard ``index``'s own folder, or a file in it (``name`` from SHARD_FILES or a relative path)."""
        base = join(self.stage_dir(stage), shard_name(index))
        return join(base, SHARD_FILES.get(name, name)) if name else base

    def parts(self, stage: str, index: int) -> str:
        """The checkpoint parts folder of shard ``index`` while it is in progress."""
        return join(self.stage_dir(stage), shard_name(index) + ".parts")

    def removed_dir(self, stage: str) -> str:
        """The folder of a mapped stage's per-shard removed rows."""
        return join(self.stage_dir(stage), "removed")

    def removed(self, stage: str, index: int | None = None) -> str:
        """Rows a stage removed (one file per shard for mapped stages, else one file)."""
        if index is None:
            return join(self.stage_dir(stage), "removed.parquet")
        return join(self.removed_dir(stage), shard_name(index) + ".parquet")


def part(parts_uri: str, number: int) -> str:
    """Checkpoint part ``number`` in a parts folder."""
    return join(parts_uri, f"part-{number:05d}.parquet")


def part_number(uri: str) -> int | None:
    """The number of a checkpoint part file, or None if ``uri`` is not one."""
    m = _PART.search(uri)
    return int(m.group(1)) if m else None
