"""Benchmark decontamination, the Cosmopedia way: n-gram candidates confirmed by ``difflib``.

1. **References.** Each benchmark item becomes one text: its ``text_columns`` joined with a space
   (e.g. question + choices). :func:`load_references` reads Parquet, JSONL, a local HF ``datasets``
   directory or a directory of Parquet files, local or ``s3://`` (the locating and format detection of
   :mod:`synthcorpus.seeds`); every bad input raises :class:`DecontamError` (a :class:`~synthcorpus.seeds.SeedError`)
   naming the file and the spec field.
2. **Index.** :class:`NgramIndex` hashes every word n-gram (default 10) of every normalized item
   (:func:`synthcorpus.text.normalize`: NFKC, lower case, punctuation removed) to 64 bits
   (blake2b) and keeps two aligned numpy arrays sorted by hash: ``uint64`` hashes and ``int32`` item
   numbers, i.e. 12 bytes per distinct (n-gram, item) pair. Items shorter than n words cannot be indexed
   and are counted in ``NgramIndex.skipped_short``.
3. **Candidates.** A document's n-grams are hashed the same way and looked up with one vectorized
   ``searchsorted``; an item sharing at least one n-gram is a candidate.
4. **Confirmation.** ``difflib.SequenceMatcher(None, doc_words, item_words, autojunk=False)``;
   ratio = sum of the matching block sizes / number of words of the item; contaminated when
   ratio > threshold (0.5, strict as in Cosmopedia).

Granularity: **words** of the normalized text, not characters. Word sequences make the matcher ~5x
cheaper than characters and are insensitive to punctuation / case edits. Because the matcher aligns
the whole item against the document, a long document would let scattered common words ("the", "of")
inflate the ratio; the document side is therefore clipped to a window around the shared n-grams,
extending ``len(item)`` words beyond the first and last shared n-gram (the item cannot match outside it
without also sharing n-grams closer to it).
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..seeds import PARQUET_SUFFIXES, SeedError, _Location, _read_arrow, _resolve_format, jsonl_objects, read_location
from ..text import clean, normalize

if TYPE_CHECKING:
    import numpy as np

DEFAULT_NGRAM = 10
DEFAULT_THRESHOLD = 0.5
REASON = "contaminated"
FIELD = "quality.decontamination.references"
log = logging.getLogger(__name__)


class DecontamError(SeedError):
    """A reference (benchmark) file or config is malformed; the message names the file and the field."""


@dataclass
class ReferenceSet:
    """The items of one benchmark: their texts (columns already joined) and ids (row numbers by default)."""

    name: str
    texts: list[str]
    ids: list[str] | None = None

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.texts))]
        elif len(self.ids) != len(self.texts):
            raise ValueError(f"{self.name}: expected as many ids as texts, got {len(self.ids)} and {len(self.texts)}")


@dataclass(frozen=True)
class Hit:
    benchmark: str
    item_id: str
    ratio: float

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "item_id": self.item_id, "ratio": self.ratio}


# ------------------------------------------------------------------------------------------ loading


def load_references(config_list: Sequence[Mapping[str, Any]], field: str = FIELD) -> list[ReferenceSet]:
    """One :class:`ReferenceSet` per config, or per distinct value of ``benchmark_column`` when set.

    A config: ``{name, path, format: auto|parquet|jsonl|hf = auto, text_columns: [..] = ["text"],
    id_column: str | None, benchmark_column: str | None}``. ``path`` is a local path or URI (resolve
    relative paths before calling). Values may be strings, nulls (empty) or lists / structs of strings
    (flattened, e.g. MMLU's ``choices`` list or ARC's ``{text, label}`` struct).
    """
    sets: list[ReferenceSet] = []
    for i, config in enumerate(config_list):
        sets.extend(_load_one(config, f"{field}[{i}]"))
    names = [s.name for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DecontamError(f"{field}: expected unique benchmark names, repeated: {dupes}")
    return sets


def _load_one(config: Mapping[str, Any], field: str) -> list[ReferenceSet]:
    if not isinstance(config, Mapping):
        raise DecontamError(f"{field}: expected a mapping with name, path, text_columns; got {config!r}")
    unknown = sorted(set(config) - {"name", "path", "format", "text_columns", "id_column", "benchmark_column"})
    if unknown:
        raise DecontamError(f"{field}: unexpected keys {unknown}")
    path = config.get("path")
    if not isinstance(path, str) or not path:
        raise DecontamError(f"{field}.path: expected a non-empty string, got {path!r}")
    name = config.get("name")
    bench_col = config.get("benchmark_column")
    if name is None:  # the spec's documented default: the file name (demo_benchmark.jsonl -> demo_benchmark)
        name = posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]
    if not (isinstance(name, str) and name) and not bench_col:
        raise DecontamError(f"{path}: {field}.name: expected a non-empty string, got {name!r}")
    text_columns = config.get("text_columns", ["text"])
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    if not isinstance(text_columns, list) or not text_columns or not all(isinstance(c, str) for c in text_columns):
        raise DecontamError(f"{path}: {field}.text_columns: expected a non-empty list of column names, got {text_columns!r}")
    id_col = config.get("id_column")
    extra = {k: c for k, c in (("id_column", id_col), ("benchmark_column", bench_col)) if c}
    columns = {"text_columns": list(text_columns), **{k: [c] for k, c in extra.items()}}

    loc = _Location.open(path, field)
    fmt = _resolve_format(loc, config.get("format", "auto"), field)
    if fmt == "jsonl":
        records = _jsonl_records(loc, columns, field)
    else:
        records = _table_records(loc, fmt, columns, field)

    groups: dict[str, ReferenceSet] = {}
    for n, (where, rec) in enumerate(records):
        text = " ".join(t for t in (_flatten(rec[c], where, f"{field}.text_columns", c) for c in text_columns) if t)
        item_id = str(rec[id_col]) if id_col and rec[id_col] is not None else str(n)
        bench = name
        if bench_col:
            value = rec[bench_col]
            if not isinstance(value, str) or not value:
                raise DecontamError(f"{where}: {field}.benchmark_column: expected {bench_col!r} to be a non-empty string, got {value!r}")
            bench = value
        ref = groups.setdefault(bench, ReferenceSet(bench, [], []))
        ref.texts.append(text)
        ref.ids.append(item_id)  # type: ignore[union-attr]
    if not groups:
        raise DecontamError(f"{loc.display}: {field}.path: expected at least one benchmark item, found none")
    return list(groups.values())


def _flatten(value: Any, where: str, field: str, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (_flatten(v, where, field, column) for v in value) if t)
    if isinstance(value, dict):
        return " ".join(t for t in (_flatten(v, where, field, column) for v in value.values()) if t)
    raise DecontamError(
        f"{where}: {field}: expected {column!r} to hold strings (or lists of strings), got {type(value).__name__} {value!r:.40}"
    )


def _jsonl_records(loc: _Location, columns: dict[str, list[str]], field: str) -> list[tuple[str, dict[str, Any]]]:
    where = loc.display
    out = []
    for lineno, obj in jsonl_objects(read_location(loc, "JSONL file", field, DecontamError), where, field, DecontamError):
        for key, cols in columns.items():
            for c in cols:
                if c not in obj:
                    raise DecontamError(
                        f"{where}: {field}.{key}: line {lineno}: expected a key {c!r}, keys present: {sorted(obj)}"
                    )
        out.append((f"{where}: line {lineno}", obj))
    return out


def _table_records(loc: _Location, fmt: str, columns: dict[str, list[str]], field: str) -> list[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = list(dict.fromkeys(c for cols in columns.values() for c in cols))
    if fmt == "hf":
        import posixpath

        state_path = posixpath.join(loc.path, "state.json")
        try:
            with loc.fs.open(state_path, "rb") as fh:
                files = [posixpath.join(loc.path, f["filename"]) for f in json.load(fh)["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DecontamError(f"{loc.child_display(state_path)}: {field}.path: expected a state.json listing _data_files ({exc!r})") from None
    elif loc.isdir:
        files = [p for p in loc.files() if p.lower().endswith(PARQUET_SUFFIXES)]
    else:
        files = [loc.path]
    out = []
    for path in files:
        where = loc.child_display(path)
        try:
            if fmt == "hf":
                table = _read_arrow(loc, path)
                names = table.column_names
            else:
                with loc.fs.open(path, "rb") as fh:
                    pf = pq.ParquetFile(fh)
                    names = pf.schema_arrow.names
                    table = pf.read(columns=[c for c in wanted if c in names])
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DecontamError(f"{where}: {field}.path: expected a readable {'Arrow' if fmt == 'hf' else 'Parquet'} file ({exc})") from None
        for key, cols in columns.items():
            for c in cols:
                if c not in names:
                    raise DecontamError(f"{where}: {field}.{key}: expected a column {c!r}, columns present: {names}")
        rows = table.select(wanted).to_pylist()
        out.extend((f"{where}: row {r}", row) for r, row in enumerate(rows))
    return out


# -------------------------------------------------------------------------------------------- index


def _words(text: str) -> list[str]:
    return normalize(text).split()


def _hashes(words: Sequence[str], n: int) -> np.ndarray:
    import numpy as np

    count = len(words) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    out = np.empty(count, dtype=np.uint64)
    for i in range(count):
        digest = hashlib.blake2b(" ".join(words[i : i + n]).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


class NgramIndex:
    """Hashed word n-grams of every benchmark item -> items (two sorted numpy arrays, 12 bytes per pair)."""

    def __init__(self, references: Iterable[ReferenceSet], n: int = DEFAULT_NGRAM) -> None:
        import numpy as np

        if n < 1:
            raise ValueError(f"n: expected >= 1, got {n}")
        self.n = n
        self.benchmarks: list[str] = []
        self.items: list[tuple[int, str]] = []  # item number -> (benchmark number, item id)
        self._item_text: list[str] = []  # normalized text (split lazily at confirmation)
        self.skipped_short: dict[str, int] = {}
        keys, posts = [], []
        for ref in references:
            b = len(self.benchmarks)
            self.benchmarks.append(ref.name)
            self.skipped_short[ref.name] = 0
            for item_id, text in zip(ref.ids or [], ref.texts):
                words = _words(text)
                if len(words) < n:
                    self.skipped_short[ref.name] += 1
                    continue
                h = np.unique(_hashes(words, n))
                keys.append(h)
                posts.append(np.full(len(h), len(self.items), dtype=np.int32))
                self.items.append((b, item_id))
                self._item_text.append(" ".join(words))
        k = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        p = np.concatenate(posts) if posts else np.empty(0, np.int32)
        order = np.lexsort((p, k))
        self._keys, self._posts = k[order], p[order]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._posts.nbytes)

    def candidates(self, words: Sequence[str]) -> dict[int, tuple[int, int]]:
        """Items sharing an n-gram with ``words`` -> (first, last) word position of a shared n-gram."""
        import numpy as np

        q = _hashes(words, self.n)
        if not len(q) or not len(self._keys):
            return {}
        left = np.searchsorted(self._keys, q, side="left")
        right = np.searchsorted(self._keys, q, side="right")
        found: dict[int, tuple[int, int]] = {}
        for pos in np.nonzero(right > left)[0].tolist():
            for item in self._posts[left[pos] : right[pos]].tolist():
                first, _ = found.get(item, (pos, pos))
                found[item] = (first, pos)
        return found

    def item_words(self, item: int) -> list[str]:
        return self._item_text[item].split()


# ------------------------------------------------------------------------------------------ matching


def contaminated(text: str, index: NgramIndex, threshold: float = DEFAULT_THRESHOLD) -> list[Hit]:
    """Benchmark items this text contains: share >= 1 n-gram and matched words / item words > threshold.

    Sorted by ratio (highest first), then benchmark and item id.
    """
    words = _words(text or "")
    hits = []
    for item, (first, last) in index.candidates(words).items():
        item_words = index.item_words(item)
        lo = max(0, first - len(item_words))
        hi = min(len(words), last + index.n + len(item_words))
        matcher = difflib.SequenceMatcher(None, words[lo:hi], item_words, autojunk=False)
        matched = sum(block.size for block in matcher.get_matching_blocks())
        ratio = matched / len(item_words)
        if ratio > threshold:
            b, item_id = index.items[item]
            hits.append(Hit(index.benchmarks[b], item_id, round(ratio, 4)))
    hits.sort(key=lambda h: (-h.ratio, h.benchmark, h.item_id))
    return hits


@dataclass
class _Tally:
    removed_docs: int = 0
    items: set[str] = field(default_factory=set)


def decontaminate_shard(
    table_rows: Any, index: NgramIndex, threshold: float = DEFAULT_THRESHOLD, text_key: str = "text"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Split rows (list of dicts or a pyarrow Table) into kept and removed.

    Removed rows get ``filter_reason = "contaminated"`` and ``decontam_hits`` (list of
    {benchmark, item_id, ratio}). Stats: input, kept, removed and per benchmark (every benchmark of the
    index, zeros included) ``removed_docs`` and the sorted ``items`` hit, which :func:`report` unions
    across shards. A document hitting two benchmarks counts once in each.
    """
    rows = table_rows.to_pylist() if hasattr(table_rows, "to_pylist") else list(table_rows)
    tallies = {name: _Tally() for name in index.benchmarks}
    kept, removed = [], []
    for row in rows:
        hits = contaminated(row.get(text_key) or "", index, threshold)
        if not hits:
            kept.append(row)
            continue
        removed.append({**row, "filter_reason": REASON, "decontam_hits": [h.to_dict() for h in hits]})
        for bench in {h.benchmark for h in hits}:
            tallies[bench].removed_docs += 1
        for h in hits:
            tallies[h.benchmark].items.add(h.item_id)
    stats = {
        "input": len(rows),
        "kept": len(kept),
        "removed": len(removed),
        "ngram": index.n,
        "threshold": threshold,
        "benchmarks": {
            name: {"removed_docs": t.removed_docs, "items": sorted(t.items)} for name, t in tallies.items()
        },
    }
    return kept, removed, stats


def report(stats_list: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per benchmark over all shards: ``removed_docs`` (summed) and ``unique_items_hit`` (union of ids)."""
    docs: dict[str, int] = {}
    items: dict[str, set[str]] = {}
    for stats in stats_list:
        for name, b in stats.get("benchmarks", {}).items():
            docs[name] = docs.get(name, 0) + int(b.get("removed_docs", 0))
            items.setdefault(name, set()).update(b.get("items", []))
    return {name: {"removed_docs": docs[name], "unique_items_hit": len(items[name])} for name in sorted(docs)}


def read_canaries(uri: str, field: str = "quality.decontamination.canaries") -> list[dict[str, Any]]:
    """Known-contaminated documents ``{id, text}`` (JSONL) planted into the corpus before the check."""
    from .. import storage

    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise DecontamError(f"{uri}: {field}: expected an existing JSONL file") from None
    rows = []
    for lineno, obj in jsonl_objects(data, uri, field, DecontamError):
        if not isinstance(obj.get("text"), str) or "id" not in obj:
            raise DecontamError(f"{uri}: {field}: line {lineno}: expected an object with 'id' and 'text'")
        rows.append({"canary_id": str(obj["id"]), "text": obj["text"]})
    return rows
