"""Seed stage: read the seed sources named by the spec into one seeds table.

Sources (``spec.seeds``):

* ``outline``: a curated YAML outline, subjects -> course -> units (:func:`read_outline`);
* ``web_samples`` and ``instructions``: tables of texts (:class:`~synthcorpus.spec.SampleSource`) read by
  :func:`read_source` from a Parquet file, a JSONL file, a local HF ``datasets`` directory written by
  ``Dataset.save_to_disk`` or a directory of Parquet files; local paths or ``s3://`` URIs (fsspec).

Sampling is deterministic: with ``sample_size`` set, rows are visited in a seeded random order (a lazy
Fisher-Yates permutation, so only the visited rows become Python objects) until ``sample_size`` usable
texts are found; usable = at least ``min_chars`` characters after whitespace normalization and not an
exact duplicate of a text already kept. Only the text column of a Parquet file is read.

A :class:`Cleaner` (the seeds stage passes ``quality.seed_clean.SeedCleaner``: this layer cannot import
the quality rules) cleans each visited text first and may drop it with a reason; every reason is counted
in :meth:`SampleRead.stats` (``cleaned``).

Every bad input raises one :class:`SeedError` naming the file or URI, the spec field and what was expected.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

import yaml

from .hashing import sha256_file
from .text import clean as normalize_text

if TYPE_CHECKING:
    import fsspec
    import pyarrow as pa

    from .spec import SampleSource

KINDS = ("outline", "web", "instruction")
# Spec field under ``seeds`` -> the ``kind`` of its rows.
SOURCE_KINDS = {"web_samples": "web", "instructions": "instruction"}
SEED_COLUMNS = ("seed_id", "kind", "text", "subject", "course", "unit")
FORMATS = ("parquet", "jsonl", "hf")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
HF_MARKERS = ("state.json", "dataset_info.json")


class SeedError(ValueError):
    """A seed file is malformed; the message names the file, the field and what was expected."""


# --------------------------------------------------------------------------------------------- outline


def read_outline(path: Path) -> list[dict[str, str]]:
    """Flatten an outline YAML into one row per unit, validating every field on the way."""
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeedError(f"{file}: expected an existing outline file") from None
    except yaml.YAMLError as exc:
        raise SeedError(f"{file}: expected valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("subjects"), list) or not data["subjects"]:
        raise SeedError(f"{file}: subjects: expected a non-empty list of subjects")
    rows: list[dict[str, str]] = []
    for i, subj in enumerate(data["subjects"]):
        where = f"subjects[{i}]"
        if not isinstance(subj, dict):
            raise SeedError(f"{file}: {where}: expected a mapping with subject, course, units")
        subject = _text(subj, "subject", file, where)
        course = _text(subj, "course", file, where)
        units = subj.get("units")
        if not isinstance(units, list) or not units:
            raise SeedError(f"{file}: {where}.units: expected a non-empty list of units")
        for j, unit in enumerate(units):
            uwhere = f"{where}.units[{j}]"
            if not isinstance(unit, dict):
                raise SeedError(f"{file}: {uwhere}: expected a mapping with title and description")
            title = _text(unit, "title", file, uwhere)
            description = _text(unit, "description", file, uwhere)
            seed_id = hashlib.sha256(f"{subject}\x1f{course}\x1f{title}".encode()).hexdigest()[:16]
            rows.append(
                {"seed_id": seed_id, "subject": subject, "course": course, "unit": title, "description": description}
            )
    ids = [r["seed_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SeedError(f"{file}: units: expected unique (subject, course, title) triples")
    return rows


def _text(obj: dict[str, Any], key: str, file: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SeedError(f"{file}: {where}.{key}: expected a non-empty string, got {value!r}")
    return value.strip()


# ------------------------------------------------------------------------------------- sample sources


def seed_id(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\x1f{text}".encode()).hexdigest()[:16]


# Why a visited row is not kept, without a cleaner: shorter than min_chars (nulls included), or an exact
# duplicate of a text already kept. A cleaner's reasons include both.
BASE_REASONS = ("too_short", "duplicate")


class Cleaner(Protocol):
    """Cleans one raw text before it becomes a seed.

    ``reasons``: every reason it can return, plus BASE_REASONS (all listed in the stats, zeros included).
    Calling it returns (the cleaned text, whitespace-normalized, or "" when dropped; the reason it is
    dropped, or None)."""

    reasons: tuple[str, ...]

    def __call__(self, text: str) -> tuple[str, str | None]: ...


@dataclass
class SampleRead:
    """The texts kept from one source, with what was read and why rows were dropped."""

    path: str
    format: str
    texts: list[str] = dc_field(default_factory=list)
    rows_read: int = 0  # rows in the source
    examined: int = 0  # rows visited by the sampler (all rows when sample_size is null)
    removed: Counter[str] = dc_field(default_factory=Counter)  # visited rows not kept, by reason
    reasons: tuple[str, ...] = BASE_REASONS  # every reason removed can hold
    files: int = 1
    sha256: str | None = None  # local: file bytes; local directory: sorted file list + content hashes
    etag: str | None = None  # s3 file: its ETag

    @property
    def too_short(self) -> int:
        """Shorter than min_chars after cleaning and normalization (nulls included)."""
        return self.removed["too_short"]

    @property
    def duplicates(self) -> int:
        """Exact duplicates of a text already kept (after cleaning)."""
        return self.removed["duplicate"]

    def stats(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "files": self.files, "sha256": self.sha256, "etag": self.etag,
            "rows_read": self.rows_read, "examined": self.examined, "too_short": self.too_short,
            "duplicates": self.duplicates, "kept": len(self.texts),
            # visited rows -> kept + removed, by reason (every reason listed)
            "cleaned": {"input": self.examined, "kept": len(self.texts),
                        "removed": {r: self.removed.get(r, 0) for r in self.reasons}},
        }


def read_samples(source: SampleSource, uri: str, field: str) -> list[str]:
    """The sampled, filtered, normalized, de-duplicated texts of a source (in source order).

    ``uri`` is the resolved location (``CorpusSpec.resolve_uri(source.path)``: ``file://`` or ``s3://``,
    a plain local path works too); ``field`` is the spec field for messages, e.g. ``seeds.web_samples``.
    """
    return read_source(source, uri, field).texts


def read_source(source: SampleSource, uri: str, field: str, cleaner: Cleaner | None = None) -> SampleRead:
    """Like :func:`read_samples`, with the counts and the fingerprint of the source. ``cleaner``: applied to
    every visited text before the length and duplicate checks (None: whitespace normalization only)."""
    loc = _Location.open(uri, field)
    fmt = _resolve_format(loc, source.format, field)
    if fmt == "jsonl":
        column = _read_jsonl(loc, source.text_column, field)
        files = 1
    elif fmt == "hf":
        column, files = _read_hf(loc, source.text_column, field)
    elif loc.isdir:
        column, files = _read_parquet_dir(loc, source.text_column, field)
    else:
        column = _read_parquet(loc, loc.path, source.text_column, field)
        files = 1
    result = SampleRead(path=uri, format=fmt if not (fmt == "parquet" and loc.isdir) else "parquet_dir", files=files)
    result.sha256, result.etag = loc.fingerprint()
    if cleaner is not None:
        result.reasons = tuple(dict.fromkeys((*cleaner.reasons, *BASE_REASONS)))
    _select(column, source.sample_size, source.seed, source.min_chars, result, cleaner)
    if not result.texts:
        others = {r: n for r, n in result.removed.items() if r not in BASE_REASONS and n}
        cleaned = f", removed by cleaning: {', '.join(f'{r} {n}' for r, n in sorted(others.items()))}" if others else ""
        raise SeedError(
            f"{loc.display}: {field}.min_chars: expected at least one usable text (>= {source.min_chars} characters "
            f"after whitespace normalization, not a duplicate); {result.rows_read} rows read, "
            f"{result.too_short} too short or null, {result.duplicates} duplicates{cleaned}"
        )
    return result


PEEK_BYTES = 1 << 20  # what the preflight reads of a JSONL seed file: its first MiB (whole lines)
PEEK_ROWS = 1000


def peek_source(source: SampleSource, uri: str, field: str) -> int:
    """Check a source before anything is generated, cheaply: it exists, its format is what the spec says (or can
    be told), and its first rows parse with a string ``text_column`` (the first MiB of a JSONL file, the first
    rows of the first Parquet or Arrow file). Returns the number of rows read; raises :class:`SeedError`
    naming the file, the spec field and what was expected. The seeds stage reads (and checks) every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    loc = _Location.open(uri, field)
    fmt = _resolve_format(loc, source.format, field)
    if fmt == "jsonl":
        try:
            with loc.fs.open(loc.path, "rb") as fh:
                data = fh.read(PEEK_BYTES + 1)
        except OSError as exc:
            raise SeedError(f"{loc.display}: {field}.path: expected a readable JSONL file ({exc})") from None
        cut = data.rfind(b"\n", 0, PEEK_BYTES)
        if len(data) > PEEK_BYTES and cut >= 0:  # whole lines only: the last one may be cut
            data = data[: cut + 1]
        elif len(data) > PEEK_BYTES:  # one line longer than the peek: read the file
            data = read_location(loc, "JSONL file", field)
        return len(_jsonl_column(data, loc.display, source.text_column, field))
    if fmt == "hf":
        return len(_read_hf(loc, source.text_column, field, first_file_only=True)[0])
    path = loc.path
    if loc.isdir:
        path = next(p for p in loc.files() if p.lower().endswith(PARQUET_SUFFIXES))
    where = loc.child_display(path)
    try:
        with loc.fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            if source.text_column not in names:
                raise SeedError(f"{where}: {field}.text_column: expected a column {source.text_column!r}, "
                                f"columns present: {names}")
            batch = next(pf.iter_batches(batch_size=PEEK_ROWS, columns=[source.text_column]), None)
    except SeedError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SeedError(f"{where}: {field}.path: expected a readable Parquet file ({exc})") from None
    if batch is None:
        return 0
    return len(_string_column(pa.chunked_array([batch.column(0)]), where, field, source.text_column))


@dataclass
class _Location:
    uri: str
    display: str  # what messages show: the local path, or the URI
    fs: fsspec.AbstractFileSystem
    path: str  # fs-native path
    isdir: bool
    local: bool

    @classmethod
    def open(cls, uri: str, field: str) -> _Location:
        import fsspec

        if uri.startswith("file://"):
            # Path.as_uri() percent-encodes (spaces...); fsspec does not decode file:// URIs.
            target, display = unquote(urlparse(uri).path), unquote(urlparse(uri).path)
        else:
            target, display = uri, uri
        try:
            fs, path = fsspec.core.url_to_fs(target)
        except (ImportError, ValueError) as exc:
            raise SeedError(f"{display}: {field}.path: expected a local path or an s3:// URI ({exc})") from None
        protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        local = "file" in protocol or "local" in protocol
        try:
            isdir = fs.isdir(path)
            found = isdir or fs.isfile(path)
        except (OSError, ValueError) as exc:
            raise SeedError(f"{display}: {field}.path: expected a readable file or directory ({exc})") from None
        if not found:
            raise SeedError(f"{display}: {field}.path: expected an existing file or directory, not found")
        return cls(uri=uri, display=display, fs=fs, path=path, isdir=isdir, local=local)

    def child_display(self, path: str) -> str:
        if self.local:
            return path
        proto = self.uri.split("://", 1)[0]
        return f"{proto}://{path}"

    def files(self) -> list[str]:
        return sorted(self.fs.find(self.path))

    def fingerprint(self) -> tuple[str | None, str | None]:
        """(sha256, etag): sha256 of a local file or directory (file list + content hashes); an s3 file's ETag."""
        try:
            if self.local:
                if not self.isdir:
                    return sha256_file(self.path), None
                lines = [f"{posixpath.relpath(p, self.path)}\0{sha256_file(p)}\n" for p in self.files()]
                return hashlib.sha256("".join(lines).encode()).hexdigest(), None
            if not self.isdir:
                info = self.fs.info(self.path)
                etag = info.get("ETag") or info.get("etag")
                return None, etag.strip('"') if isinstance(etag, str) else None
        except OSError:
            pass
        return None, None


def _resolve_format(loc: _Location, fmt: str, field: str) -> str:
    if fmt not in ("auto", *FORMATS):
        raise SeedError(f"{loc.display}: {field}.format: expected one of auto, parquet, jsonl, hf; got {fmt!r}")
    if loc.isdir:
        names = {posixpath.basename(p) for p in loc.fs.ls(loc.path, detail=False)}
        if "dataset_dict.json" in names and not names & set(HF_MARKERS):
            splits = sorted(n for n in names if n != "dataset_dict.json")
            raise SeedError(
                f"{loc.display}: {field}.path: expected one split of a DatasetDict (a directory with state.json), "
                f"e.g. {posixpath.join(loc.display, splits[0]) if splits else loc.display + '/train'}; "
                f"found splits {splits}"
            )
        is_hf = bool(names & set(HF_MARKERS))
        if fmt == "jsonl":
            raise SeedError(f"{loc.display}: {field}.format: expected a JSONL file for format 'jsonl', got a directory")
        if fmt == "hf" or (fmt == "auto" and is_hf):
            if not is_hf:
                raise SeedError(
                    f"{loc.display}: {field}.format: expected an HF datasets directory written by save_to_disk "
                    f"(with state.json and dataset_info.json), found {sorted(names)[:10]}"
                )
            return "hf"
        if not any(p.lower().endswith(PARQUET_SUFFIXES) for p in loc.files()):
            raise SeedError(
                f"{loc.display}: {field}.path: expected a directory of Parquet files (*.parquet) or an HF datasets "
                f"directory (state.json), found {sorted(names)[:10]}"
            )
        return "parquet"
    if fmt == "hf":
        raise SeedError(f"{loc.display}: {field}.format: expected a directory for format 'hf' (save_to_disk), got a file")
    if fmt != "auto":
        return fmt
    lower = loc.path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise SeedError(
        f"{loc.display}: {field}.format: cannot tell the format from the name; expected a file ending in "
        f"{', '.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)}, a directory, or an explicit format: parquet | jsonl | hf"
    )


def _string_column(col: pa.ChunkedArray, where: str, field: str, text_column: str) -> pa.ChunkedArray:
    import pyarrow as pa

    t = col.type
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        col = col.cast(t.value_type)
        t = col.type
    ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
    ok = ok or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
    if not ok:
        raise SeedError(f"{where}: {field}.text_column: expected column {text_column!r} to hold strings, got {t}")
    return col.cast(pa.large_string())


def _read_parquet(loc: _Location, path: str, text_column: str, field: str) -> pa.ChunkedArray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = loc.child_display(path)
    try:
        with loc.fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            if text_column not in names:
                raise SeedError(
                    f"{where}: {field}.text_column: expected a column {text_column!r}, columns present: {names}"
                )
            col = pf.read(columns=[text_column]).column(text_column)
    except SeedError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SeedError(f"{where}: {field}.path: expected a readable Parquet file ({exc})") from None
    return _string_column(col, where, field, text_column)


def _read_parquet_dir(loc: _Location, text_column: str, field: str) -> tuple[pa.ChunkedArray, int]:
    import pyarrow as pa

    files = [p for p in loc.files() if p.lower().endswith(PARQUET_SUFFIXES)]
    chunks = [_read_parquet(loc, p, text_column, field) for p in files]
    return pa.chunked_array([c for chunk in chunks for c in chunk.chunks], type=pa.large_string()), len(files)


def _read_hf(loc: _Location, text_column: str, field: str, first_file_only: bool = False) -> tuple[pa.ChunkedArray, int]:
    import pyarrow as pa

    state_path = posixpath.join(loc.path, "state.json")
    where = loc.child_display(state_path)
    try:
        with loc.fs.open(state_path, "rb") as fh:
            state = json.load(fh)
        data_files = [f["filename"] for f in state["_data_files"]]
    except FileNotFoundError:
        raise SeedError(f"{where}: {field}.path: expected the state.json written by Dataset.save_to_disk") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SeedError(f"{where}: {field}.path: expected a state.json listing _data_files ({exc!r})") from None
    if not data_files:
        raise SeedError(f"{where}: {field}.path: expected at least one data file in _data_files")
    chunks: list[pa.Array] = []
    for name in data_files[:1] if first_file_only else data_files:
        path = posixpath.join(loc.path, name)
        fwhere = loc.child_display(path)
        try:
            table = _read_arrow(loc, path)
        except FileNotFoundError:
            raise SeedError(f"{fwhere}: {field}.path: expected the data file listed in state.json, not found") from None
        except (pa.ArrowException, OSError) as exc:
            raise SeedError(f"{fwhere}: {field}.path: expected a readable Arrow file ({exc})") from None
        if text_column not in table.column_names:
            raise SeedError(
                f"{fwhere}: {field}.text_column: expected a column {text_column!r}, columns present: {table.column_names}"
            )
        chunks.extend(_string_column(table.column(text_column), fwhere, field, text_column).chunks)
    return pa.chunked_array(chunks, type=pa.large_string()), len(data_files)


def _read_arrow(loc: _Location, path: str) -> pa.Table:
    """An Arrow IPC file as written by ``datasets`` (stream format; file format accepted too)."""
    import pyarrow as pa

    if loc.local:
        source: Any = pa.memory_map(path)  # zero copy: untouched columns are never loaded
    else:
        with loc.fs.open(path, "rb") as fh:
            source = pa.BufferReader(fh.read())
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source).read_all()


def jsonl_objects(data: bytes, where: str, field: str, error: type[SeedError] = SeedError) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; one clear error naming the file,
    the spec field and the line for anything that is not a JSON object."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: {field}.path: expected UTF-8 text (invalid byte at offset {exc.start})") from None
    # Split on "\n" only: JSON strings may legally contain raw U+2028 and friends, which splitlines() breaks on.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(
                f"{where}: {field}.path: line {lineno}: expected one JSON object per line ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise error(f"{where}: {field}.path: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_location(loc: _Location, what: str, field: str, error: type[SeedError] = SeedError) -> bytes:
    try:
        with loc.fs.open(loc.path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise error(f"{loc.display}: {field}.path: expected a readable {what} ({exc})") from None


def _read_jsonl(loc: _Location, text_column: str, field: str) -> pa.ChunkedArray:
    return _jsonl_column(read_location(loc, "JSONL file", field), loc.display, text_column, field)


def _jsonl_column(data: bytes, where: str, text_column: str, field: str) -> pa.ChunkedArray:
    import pyarrow as pa

    values: list[str | None] = []
    for lineno, obj in jsonl_objects(data, where, field):
        if text_column not in obj:
            raise SeedError(
                f"{where}: {field}.text_column: line {lineno}: expected a key {text_column!r}, keys present: "
                f"{sorted(obj)}"
            )
        value = obj[text_column]
        if value is not None and not isinstance(value, str):
            raise SeedError(
                f"{where}: {field}.text_column: line {lineno}: expected {text_column!r} to be a string, "
                f"got {type(value).__name__} {_short(value)}"
            )
        values.append(value)
    return pa.chunked_array([pa.array(values, type=pa.large_string())])


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _permutation(n: int, rng: random.Random) -> Iterator[int]:
    """A uniformly random permutation of range(n), produced lazily (Fisher-Yates on a sparse dict)."""
    swapped: dict[int, int] = {}
    for i in range(n):
        j = rng.randrange(i, n)
        at_j = swapped.get(j, j)
        swapped[j] = swapped.pop(i, i)
        yield at_j


def _select(column: pa.ChunkedArray, sample_size: int | None, seed: int, min_chars: int, out: SampleRead,
            cleaner: Cleaner | None = None) -> None:
    """Fill ``out.texts``: visit rows (all in order, or a seeded random order), keep usable ones."""
    import pyarrow as pa

    n = len(column)
    out.rows_read = n
    if sample_size is None:
        order: Iterator[int] = iter(range(n))
        target = n
    else:
        order = _permutation(n, random.Random(seed))
        target = min(sample_size, n)
    kept: list[tuple[int, str]] = []
    seen: set[str] = set()
    while len(kept) < target:
        # Batches a bit larger than what is still needed: few round trips, few wasted conversions.
        size = 65536 if sample_size is None else min(65536, max(256, 2 * (target - len(kept))))
        batch = list(itertools.islice(order, size))
        if not batch:
            break
        values = column.take(pa.array(batch, type=pa.int64())).to_pylist()
        for index, value in zip(batch, values):
            if len(kept) >= target:
                break
            out.examined += 1
            reason = None
            if not value:
                text = ""
            elif cleaner is None:
                text = normalize_text(value)
            else:
                text, reason = cleaner(value)
            if reason is None:
                if len(text) < min_chars:
                    reason = "too_short"
                elif text in seen:
                    reason = "duplicate"
            if reason is None:
                seen.add(text)
                kept.append((index, text))
                continue
            out.removed[reason] += 1
    kept.sort()
    out.texts = [text for _, text in kept]


# ----------------------------------------------------------------------------------------------- stage


def seeds_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("seed_id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("subject", pa.string()),
            pa.field("course", pa.string()),
            pa.field("unit", pa.string()),
        ]
    )


def outline_rows(path: Path) -> list[dict[str, str | None]]:
    rows = []
    first: dict[str, str] = {}
    for r in read_outline(path):
        text = normalize_text(r["description"])
        where = f"{r['subject']} / {r['course']} / {r['unit']}"
        if text in first:
            raise SeedError(
                f"{path}: units.description: expected unique unit descriptions, {where!r} repeats the one of {first[text]!r}"
            )
        first[text] = where
        rows.append(
            {"seed_id": seed_id("outline", text), "kind": "outline", "text": text,
             "subject": r["subject"], "course": r["course"], "unit": r["unit"]}
        )
    return rows
