"""A persistent, sharded index of published documents: what a refresh deduplicates against.

A corpus version publishes documents; version N+1 must skip prompt ids already published and drop new
documents that are exact (normalized-text hash) or MinHash near-duplicates of *anything* published
before, at a cost that follows the new documents, not the history. The index is one immutable
*segment* per published version under a root URI (``{root}/{name}/``), written once by
:func:`write_segment` and queried by :class:`PublishedIndex` over any list of segment names.
This module knows nothing of the run layout: the caller says where ``root`` is and what ``name`` is.

A segment::

    {root}/{name}/keys/partition-00000.parquet ..  kind int8, key uint64, doc int64; sorted by (kind, key, doc)
    {root}/{name}/docs.parquet                doc -> prompt_id, text_hash, n_shingles (row groups of 8192)
    {root}/{name}/sigs.bin                    doc -> MinHash signature: documents x num_perm uint32 (LE)
    {root}/{name}/segment.json                the commit, written last: params, partitions, documents,
                                              every file with its bytes and sha256

Keys: one per document of kind ``KIND_PROMPT`` (8 bytes of blake2b of the prompt id) and ``KIND_TEXT``
(the first 16 hex digits of the text hash), and, for documents with shingles, one per LSH band of kind
``b`` (the band index 0..bands-1) whose key is the band hash. Matching is on (kind, key), so equal
hashes in different bands never collide. A key's partition is ``key % partitions`` (every key is a
uniform 64-bit hash). Partition files are sorted, so a query reads only the row groups whose
(kind, key) statistics can hold one of its keys. Every hit is verified: prompt id / full text hash
equality in docs.parquet (only the row groups of hit documents), estimated Jaccard on the full
signature read as byte ranges of sigs.bin (only the candidates' 4 x num_perm bytes each: fixed-width
rows, because candidates are spread over the whole history and even one Parquet row group per
candidate would read most of it). Memory: a query holds its own keys and one partition of one segment;
writing holds one input batch, < 8192 buffered document rows and, at the end, one partition.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import storage
from .minhash import MinHashParams, band_columns

FORMAT = "synthcorpus.published_index/1"
# Partitions of a segment: None chooses the smallest power of two (<= SPILL_BUCKETS) that keeps a
# partition at <= KEYS_PER_PARTITION keys (~17 MB; 16 keys per document at 14 bands): a 10 k-document
# version gets 1 file, 100 k gets 2, 1 M gets 16. Few files matter on object stores (a GET per file
# per query); the partition size bounds a query's memory.
PARTITIONS: int | None = None
KEYS_PER_PARTITION = 1 << 20
SPILL_BUCKETS = 256
DOC_ROW_GROUP = 8192  # documents per docs.parquet row group: what candidate verification reads at least
KEY_ROW_GROUP = 16384  # keys per partition row group: the unit of row-group pruning
KIND_PROMPT = -2
KIND_TEXT = -1
# A band hash shared by more published documents than this is a boilerplate pattern: the first ones (in
# doc order) are enough candidates, and the cap bounds a query's memory by new keys x this.
CANDIDATES_PER_KEY = 32
SEGMENT_JSON = "segment.json"
DOCS_FILE = "docs.parquet"
SIGS_FILE = "sigs.bin"
_META = b"synthcorpus.published_index"
_SPILL = np.dtype([("kind", "i1"), ("key", "<u8"), ("doc", "<i8")])


class PublishedIndexError(ValueError):
    """A segment cannot be written or read: the message names the file URI and what was expected."""


def partition_file(index: int) -> str:
    return f"keys/partition-{index:05d}.parquet"


# ---------------------------------------------------------------------------------------------- keys


def prompt_keys(prompt_ids: Sequence[str]) -> np.ndarray:
    """uint64 key of each prompt id: the first 8 bytes (little endian) of blake2b-64 of its UTF-8."""
    digest = b"".join(hashlib.blake2b(str(p).encode(), digest_size=8).digest() for p in prompt_ids)
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)


def text_keys(text_hashes: Sequence[str], what: str = "text_hashes") -> np.ndarray:
    """uint64 key of each hex text hash (``filters.text_hash``): its first 16 hex digits."""
    out = np.empty(len(text_hashes), np.uint64)
    for i, h in enumerate(text_hashes):
        try:
            if not isinstance(h, str) or len(h) < 16:
                raise ValueError(h)
            out[i] = int(h[:16], 16)
        except ValueError:
            raise PublishedIndexError(f"{what}[{i}]: expected a hex string of >= 16 digits (filters.text_hash), "
                                      f"got {h!r}") from None
    return out


# --------------------------------------------------------------------------------------------- write


def _schemas(params: MinHashParams) -> tuple[Any, Any]:
    import pyarrow as pa

    meta = {_META: json.dumps({"format": FORMAT, "params": params.signature_key()}, sort_keys=True)}
    keys = pa.schema([pa.field("kind", pa.int8()), pa.field("key", pa.uint64()), pa.field("doc", pa.int64())],
                     metadata=meta)
    docs = pa.schema([pa.field("prompt_id", pa.string()), pa.field("text_hash", pa.string()),
                      pa.field("n_shingles", pa.int32())], metadata=meta)
    return keys, docs


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise PublishedIndexError(f"segment name {name!r}: expected one path component (e.g. 'v3')")


def _column(batch: Any, name: str, type_: Any, where: str, check: Any = None) -> Any:
    import pyarrow as pa

    if name not in batch.schema.names:
        raise PublishedIndexError(f"{where}: column {name!r} missing; expected {type_} "
                                  f"(columns: prompt_id, text_hash, n_shingles, band_00.., sig)")
    col = batch.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if check is not None and not check(col.type):
        raise PublishedIndexError(f"{where}: column {name!r}: expected {type_}, got {col.type}")
    if col.null_count:
        raise PublishedIndexError(f"{where}: column {name!r}: expected no nulls, got {col.null_count}")
    try:
        return col.cast(type_) if col.type != type_ else col
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PublishedIndexError(f"{where}: column {name!r}: expected {type_}, got {col.type} ({exc})") from exc


def _iter_input(batches: Any) -> Iterator[Any]:
    import pyarrow as pa

    if isinstance(batches, (pa.RecordBatch, pa.Table)):
        batches = [batches]
    for item in batches:
        if isinstance(item, pa.Table):
            yield from item.combine_chunks().to_batches()
        else:
            yield item


def _batch_arrays(batch: Any, params: MinHashParams, where: str) -> tuple[Any, Any, np.ndarray, np.ndarray, Any]:
    """(prompt_id, text_hash, n_shingles, bands (n, B), sig FixedSizeListArray) of one input batch."""
    import pyarrow as pa
    import pyarrow.types as pt

    is_string = lambda t: pt.is_string(t) or pt.is_large_string(t)  # noqa: E731
    pid = _column(batch, "prompt_id", pa.string(), where, is_string)
    th = _column(batch, "text_hash", pa.string(), where, is_string)
    ns = _column(batch, "n_shingles", pa.int32(), where, pt.is_integer).to_numpy()
    bands = np.empty((batch.num_rows, params.bands), np.uint64)
    for i, c in enumerate(band_columns(params)):
        bands[:, i] = _column(batch, c, pa.uint64(), where, pt.is_uint64).to_numpy()
    sig_type = pa.list_(pa.uint32(), params.num_perm)
    sig = _column(batch, "sig", sig_type, where,
                  lambda t: pt.is_fixed_size_list(t) and t.list_size == params.num_perm and pt.is_uint32(t.value_type))
    return pid, th, ns, bands, sig


def write_segment(root: str, name: str, batches: Iterable[Any], params: MinHashParams,
                  partitions: int | None = PARTITIONS) -> dict[str, Any]:
    """Write segment ``{root}/{name}/`` of exactly the documents a version publishes (record batches or
    tables with ``prompt_id``, ``text_hash``, ``n_shingles``, ``band_00..``, ``sig``; doc = row number in
    input order). Files first, ``segment.json`` last. An existing segment is overwritten: its segment.json
    is removed once the input is read and valid (invalid input leaves it as it was), then files, then the
    new segment.json; files the new commit does not list are deleted after it. Returns the segment.json."""
    import pyarrow as pa

    _check_name(name)
    if partitions is not None and (not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1):
        raise PublishedIndexError(f"write_segment(partitions={partitions!r}): expected an int >= 1 or None "
                                  f"(from the segment's size)")
    if params.bands > 127:
        raise PublishedIndexError(f"MinHashParams.bands={params.bands}: expected <= 127 (kind is int8)")
    seg = storage.join(root, name)
    key_schema, doc_schema = _schemas(params)
    spill = tempfile.mkdtemp(prefix="synthcorpus-index-")
    counts = {"prompt": 0, "text": 0, "band": 0}
    docs = 0
    sigs_tmp = os.path.join(spill, SIGS_FILE)
    keys = _KeySpill(spill, SPILL_BUCKETS if partitions is None else partitions)
    try:
        sigs_out = open(sigs_tmp, "wb")
        try:
            with storage.ParquetStreamWriter(storage.join(seg, DOCS_FILE), doc_schema) as writer:
                pending: list[Any] = []
                buffered = 0
                for i, batch in enumerate(_iter_input(batches)):
                    if batch.num_rows == 0:
                        continue
                    pid, th, ns, bands, sig = _batch_arrays(batch, params, f"{seg}: input batch {i}")
                    n = batch.num_rows
                    doc = np.arange(docs, docs + n, dtype=np.int64)
                    has = ns > 0
                    nb = int(has.sum()) * params.bands
                    rec = np.empty(2 * n + nb, _SPILL)
                    rec["kind"][:n], rec["key"][:n], rec["doc"][:n] = KIND_PROMPT, prompt_keys(pid.to_pylist()), doc
                    rec["kind"][n:2 * n], rec["doc"][n:2 * n] = KIND_TEXT, doc
                    rec["key"][n:2 * n] = text_keys(th.to_pylist(), f"{seg}: input batch {i}: column 'text_hash'")
                    rec["kind"][2 * n:] = np.tile(np.arange(params.bands, dtype=np.int8), int(has.sum()))
                    rec["key"][2 * n:] = bands[has].reshape(-1)
                    rec["doc"][2 * n:] = np.repeat(doc[has], params.bands)
                    keys.add(rec)
                    counts["prompt"] += n
                    counts["text"] += n
                    counts["band"] += nb
                    docs += n
                    sig.flatten().to_numpy().astype("<u4", copy=False).tofile(sigs_out)
                    pending.append(pa.Table.from_arrays([pid, th, pa.array(ns.astype(np.int32))], schema=doc_schema))
                    buffered += n
                    if buffered >= DOC_ROW_GROUP:
                        table = pa.concat_tables(pending).combine_chunks()
                        full = (buffered // DOC_ROW_GROUP) * DOC_ROW_GROUP
                        for s in range(0, full, DOC_ROW_GROUP):
                            writer.write(table.slice(s, DOC_ROW_GROUP))
                        pending, buffered = [table.slice(full)], buffered - full
                if buffered:
                    writer.write(pa.concat_tables(pending).combine_chunks())
                # Every batch is valid: uncommit an existing segment before its first file is replaced, so
                # that no reader pairs the old segment.json with new files.
                storage.delete(storage.join(seg, SEGMENT_JSON))
        finally:
            sigs_out.close()
        _put_file(sigs_tmp, storage.join(seg, SIGS_FILE))
        if partitions is None:
            partitions = 1
            while partitions < SPILL_BUCKETS and keys.total > partitions * KEYS_PER_PARTITION:
                partitions *= 2
        for p in range(partitions):
            _write_partition(storage.join(seg, partition_file(p)), keys.partition(p, partitions), key_schema)
    finally:
        keys.close()
        shutil.rmtree(spill, ignore_errors=True)

    files = {}
    for rel in [DOCS_FILE, SIGS_FILE] + [partition_file(p) for p in range(partitions)]:
        size, digest = storage.sha256(storage.join(seg, rel))
        files[rel] = {"bytes": size, "sha256": digest}
    commit = {"format": FORMAT, "name": name, "params": params.signature_key(), "partitions": partitions,
              "documents": docs, "keys": counts, "doc_row_group": DOC_ROW_GROUP, "files": files}
    storage.write_json(storage.join(seg, SEGMENT_JSON), commit)
    # Files of an earlier commit that this one does not list (it had more partitions). Compared as
    # filesystem paths: list_files and join may spell the same object differently.
    listed = {storage._fs(storage.join(seg, rel))[1] for rel in [*files, SEGMENT_JSON]}
    for uri in storage.list_files(seg):
        if storage._fs(uri)[1] not in listed:
            storage.delete(uri)
    return commit


def _put_file(local: str, uri: str) -> None:
    """Move a finished local file to ``uri`` atomically (rename beside the target, or one upload), like
    storage.ParquetStreamWriter does for Parquet."""
    fs, path = storage._fs(uri)
    try:
        if storage._is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                os.replace(local, path)
            except OSError as exc:  # the spill dir is on another filesystem: copy beside, then rename
                if exc.errno != errno.EXDEV:
                    raise
                storage._copy_then_rename(local, path)
        else:
            fs.put_file(local, path)
    except OSError as exc:
        raise storage.StorageError(f"{uri}: write failed ({exc})") from exc


class _KeySpill:
    """The keys of a segment being written, by bucket (``key % buckets``). They stay in memory up to
    KEYS_PER_PARTITION keys (a segment that small never touches the disk); beyond that they are appended
    to one local file per bucket. Partition p of P (P divides ``buckets``) is the union of the buckets
    b with b % P == p, since then key % P == (key % buckets) % P."""

    def __init__(self, directory: str, buckets: int):
        self.directory, self.buckets = directory, buckets
        self.pending: list[np.ndarray] = []
        self.held = self.total = 0
        self.files: dict[int, Any] = {}
        self.spilled = False

    def add(self, rec: np.ndarray) -> None:
        self.pending.append(rec)
        self.held += len(rec)
        self.total += len(rec)
        if self.held > KEYS_PER_PARTITION:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        rec = np.concatenate(self.pending)
        self.pending, self.held, self.spilled = [], 0, True
        part = rec["key"] % np.uint64(self.buckets)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.buckets + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            if b not in self.files:
                self.files[b] = open(os.path.join(self.directory, f"keys-{b:05d}"), "wb")
            rec[order[bounds[b] : bounds[b + 1]]].tofile(self.files[b])

    def partition(self, p: int, partitions: int) -> np.ndarray:
        if not self.spilled:
            rec = np.concatenate(self.pending) if self.pending else np.zeros(0, _SPILL)
            return rec[rec["key"] % np.uint64(partitions) == p]
        self._flush()
        for fh in self.files.values():
            fh.flush()
        parts = [np.fromfile(self.files[b].name, dtype=_SPILL)
                 for b in range(p, self.buckets, partitions) if b in self.files]
        return np.concatenate(parts) if parts else np.zeros(0, _SPILL)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _write_partition(uri: str, rec: np.ndarray, schema: Any) -> None:
    import pyarrow as pa

    order = np.lexsort((rec["doc"], rec["key"], rec["kind"]))
    kind, key, doc = rec["kind"][order], rec["key"][order], rec["doc"][order]
    del rec, order
    with storage.ParquetStreamWriter(uri, schema) as writer:
        for s in range(0, len(key), KEY_ROW_GROUP):
            e = s + KEY_ROW_GROUP
            arrays = [pa.array(kind[s:e]), pa.array(key[s:e]), pa.array(doc[s:e])]
            writer.write(pa.Table.from_arrays(arrays, schema=schema))


# ---------------------------------------------------------------------------------------------- read


def _plan(kinds: np.ndarray, keys: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Queries ordered by (partition, kind, key), and each partition's bounds in that order."""
    part = keys % np.uint64(partitions)
    order = np.lexsort((keys, kinds, part))
    return order, np.searchsorted(part[order], np.arange(partitions + 1))


class _Segment:
    """One committed segment: its segment.json, checked against the files in storage."""

    def __init__(self, root: str, name: str, params: MinHashParams):
        _check_name(name)
        self.uri = storage.join(root, name)
        self.json_uri = storage.join(self.uri, SEGMENT_JSON)
        try:
            meta = storage.read_json(self.json_uri)
        except FileNotFoundError:
            raise PublishedIndexError(f"{self.json_uri}: missing; expected the commit of segment {name!r} "
                                      f"(written last by write_segment)") from None
        except storage.StorageError as exc:
            raise PublishedIndexError(f"{self.json_uri}: expected the JSON commit of segment {name!r} ({exc})") from exc
        self._check_meta(meta, name)
        if meta["params"] != params.signature_key():
            made, wanted = (json.dumps(x, sort_keys=True) for x in (meta["params"], params.signature_key()))
            raise PublishedIndexError(
                f"{self.json_uri}: params: segment made with MinHash params {made}, the index is opened with "
                f"{wanted}; band hashes and signatures are not comparable: a full rebuild of the index (every "
                f"segment) with the new params is needed")
        self.meta = meta
        self.name = name
        self.partitions = int(meta["partitions"])
        self.documents = int(meta["documents"])
        self.num_perm = params.num_perm
        want = self.documents * self.num_perm * 4
        if meta["files"][SIGS_FILE]["bytes"] != want:
            raise PublishedIndexError(f"{self.json_uri}: files.{SIGS_FILE}.bytes: expected {want} ({self.documents} "
                                      f"documents x {self.num_perm} uint32), got {meta['files'][SIGS_FILE]['bytes']}")
        self._check_files()
        self._doc_offsets: np.ndarray | None = None

    def _check_meta(self, meta: Any, name: str) -> None:
        def bad(field: str, expected: str) -> PublishedIndexError:
            got = meta.get(field) if isinstance(meta, dict) else meta
            return PublishedIndexError(f"{self.json_uri}: {field}: expected {expected}, got {got!r}")

        if not isinstance(meta, dict):
            raise bad("(top level)", "an object")
        if meta.get("format") != FORMAT:
            raise bad("format", repr(FORMAT))
        if meta.get("name") != name:
            raise bad("name", repr(name))
        if not isinstance(meta.get("params"), dict):
            raise bad("params", "MinHashParams.signature_key() as an object")
        for field in ("partitions", "documents"):
            v = meta.get(field)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if field == "partitions" else 0):
                raise bad(field, "an int >= " + ("1" if field == "partitions" else "0"))
        files = meta.get("files")
        expected = [DOCS_FILE, SIGS_FILE] + [partition_file(p) for p in range(meta["partitions"])]
        if not isinstance(files, dict) or any(
                not isinstance(files.get(f), dict) or not isinstance(files[f].get("bytes"), int)
                or not isinstance(files[f].get("sha256"), str) for f in expected):
            raise bad("files", f"{{path: {{bytes, sha256}}}} for {DOCS_FILE}, {SIGS_FILE} and {partition_file(0)}.."
                               f"{partition_file(meta['partitions'] - 1)}")

    def _check_files(self) -> None:
        fs, base = storage._fs(self.uri)
        try:
            found = fs.find(base, detail=True)
        except (FileNotFoundError, OSError):
            found = {}
        sizes = {posixpath.relpath(p, base): info.get("size") for p, info in found.items()}
        for rel, rec in self.meta["files"].items():
            uri = storage.join(self.uri, rel)
            if rel not in sizes:
                raise PublishedIndexError(f"{uri}: missing; expected {rec['bytes']} bytes as recorded in "
                                          f"{self.json_uri}")
            if sizes[rel] != rec["bytes"]:
                raise PublishedIndexError(f"{uri}: {sizes[rel]} bytes, expected {rec['bytes']} as recorded in "
                                          f"{self.json_uri} (truncated or rewritten)")

    def file(self, rel: str) -> str:
        return storage.join(self.uri, rel)

    def _open(self, rel: str) -> Any:
        import contextlib

        import pyarrow as pa
        import pyarrow.parquet as pq

        uri = self.file(rel)

        @contextlib.contextmanager
        def opened() -> Iterator[Any]:
            fs, path = storage._fs(uri)
            try:
                with fs.open(path, "rb") as fh:
                    yield pq.ParquetFile(fh)
            except FileNotFoundError:
                raise PublishedIndexError(f"{uri}: missing; expected the file recorded in {self.json_uri}") from None
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, KeyError) as exc:
                raise PublishedIndexError(f"{uri}: expected a Parquet file of this index, as recorded in "
                                          f"{self.json_uri} ({type(exc).__name__}: {exc})") from exc

        return opened()

    # ---------------------------------------------------------------------------------- key lookups

    def lookup(self, kinds: np.ndarray, keys: np.ndarray, cap: int,
               plan: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(query index, doc) of every (kind, key) hit, at most ``cap`` docs per query, partition by
        partition; each partition reads only the row groups that can hold a query key. ``plan``:
        :func:`_plan` of the same queries for this segment's partition count (reused across segments)."""
        order, bounds = plan if plan is not None else _plan(kinds, keys, self.partitions)
        out_q, out_d = [], []
        for p in np.flatnonzero(np.diff(bounds)):
            qi = order[bounds[p]:bounds[p + 1]]  # sorted by (kind, key)
            q, d = self._lookup_partition(p, kinds[qi], keys[qi], cap)
            out_q.append(qi[q])
            out_d.append(d)
        if not out_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_q), np.concatenate(out_d)

    def _lookup_partition(self, p: int, qkind: np.ndarray, qkey: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """Hits of queries sorted by (kind, key) in partition ``p``, one row group at a time (so memory is
        one row group, whatever the partition's size); row groups whose statistics exclude every query
        are not read. A run of equal keys across two row groups may give up to 2 x ``cap`` hits."""
        rel = partition_file(p)
        kinds_present = np.unique(qkind)
        starts = np.searchsorted(qkind, kinds_present, "left")
        ends = np.searchsorted(qkind, kinds_present, "right")
        span = {int(k): (int(a), int(b)) for k, a, b in zip(kinds_present, starts, ends)}  # query rows per kind
        out_q, out_d = [], []
        with self._open(rel) as pf:
            names = pf.schema_arrow.names
            if names[:3] != ["kind", "key", "doc"]:
                raise PublishedIndexError(f"{self.file(rel)}: columns {names}, expected kind, key, doc")
            md = pf.metadata
            for g in range(md.num_row_groups):
                ranges = self._query_ranges(md.row_group(g), qkey, span)
                if not ranges:
                    continue
                try:
                    table = pf.read_row_group(g, columns=["kind", "key", "doc"])
                except (OSError, ValueError) as exc:
                    raise PublishedIndexError(f"{self.file(rel)}: row group {g} unreadable ({exc}); expected the "
                                              f"partition recorded in {self.json_uri}") from exc
                dkind, dkey, ddoc = (table.column(i).to_numpy() for i in range(3))
                for k, a, b in ranges:
                    lo, hi = np.searchsorted(dkind, k, "left"), np.searchsorted(dkind, k, "right")
                    if hi == lo:
                        continue
                    keys_k, q = dkey[lo:hi], qkey[a:b]
                    left = np.searchsorted(keys_k, q, "left")
                    n = np.minimum(np.searchsorted(keys_k, q, "right") - left, cap)
                    if not n.any():
                        continue
                    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
                    out_q.append(np.repeat(np.arange(a, b), n))
                    out_d.append(ddoc[lo:hi][np.repeat(left, n) + within])
        if not out_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_q), np.concatenate(out_d)

    @staticmethod
    def _query_ranges(rg: Any, qkey: np.ndarray, span: dict[int, tuple[int, int]]) -> list[tuple[int, int, int]]:
        """(kind, first, end) ranges of the sorted queries that row group ``rg`` may hold, from its min/max
        statistics; empty: the row group need not be read."""
        sk, sy = rg.column(0).statistics, rg.column(1).statistics
        if sk is None or sy is None or not sk.has_min_max or not sy.has_min_max:
            return [(k, a, b) for k, (a, b) in span.items()]
        kmin, kmax = int(sk.min), int(sk.max)
        if kmin != kmax:  # spans kinds (at kind boundaries): every query of the kinds in range
            return [(k, a, b) for k, (a, b) in span.items() if kmin <= k <= kmax]
        if kmin not in span:
            return []
        a, b = span[kmin]
        lo = a + int(np.searchsorted(qkey[a:b], np.uint64(sy.min), "left"))
        hi = a + int(np.searchsorted(qkey[a:b], np.uint64(sy.max), "right"))
        return [(kmin, lo, hi)] if hi > lo else []

    # ---------------------------------------------------------------------------------- documents

    def signatures(self, docs: np.ndarray, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(docs, their signatures (k, num_perm) uint32) for sorted unique ``docs``, ``chunk`` at a time:
        byte ranges of sigs.bin (documents x num_perm little-endian uint32), so only these are read."""
        uri = self.file(SIGS_FILE)
        fs, path = storage._fs(uri)
        width = self.num_perm * 4
        for s in range(0, len(docs), chunk):
            part = docs[s : s + chunk]
            starts = (part * width).tolist()
            try:
                blobs = fs.cat_ranges([path] * len(part), starts, [x + width for x in starts])
            except FileNotFoundError:
                raise PublishedIndexError(f"{uri}: missing; expected the file recorded in {self.json_uri}") from None
            except OSError as exc:
                raise PublishedIndexError(f"{uri}: read failed ({exc})") from exc
            data = b"".join(blobs)
            if len(data) != width * len(part):
                raise PublishedIndexError(f"{uri}: short read ({len(data)} of {width * len(part)} bytes); expected "
                                          f"{self.documents} signatures as recorded in {self.json_uri}")
            yield part, np.frombuffer(data, dtype="<u4").reshape(len(part), self.num_perm)

    def iter_docs(self, docs: np.ndarray, columns: list[str]) -> Iterator[tuple[np.ndarray, Any]]:
        """For sorted unique ``docs``: (the docs in one row group, their rows of ``columns``), one row
        group of docs.parquet at a time, reading only row groups that hold one of them."""
        with self._open(DOCS_FILE) as pf:
            if self._doc_offsets is None:
                md = pf.metadata
                self._doc_offsets = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])
                if self._doc_offsets[-1] != self.documents:
                    raise PublishedIndexError(f"{self.file(DOCS_FILE)}: {self._doc_offsets[-1]} rows, expected "
                                              f"{self.documents} as recorded in {self.json_uri}")
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise PublishedIndexError(f"{self.file(DOCS_FILE)}: columns {missing} missing; expected "
                                          f"prompt_id, text_hash, n_shingles")
            offs = self._doc_offsets
            if len(docs) and (docs[0] < 0 or docs[-1] >= self.documents):
                raise PublishedIndexError(f"{self.uri}/keys: a key points at doc {int(docs[-1])}, expected "
                                          f"0..{self.documents - 1} (documents in {self.json_uri})")
            g_of = np.searchsorted(offs, docs, "right") - 1
            cut = np.flatnonzero(np.r_[True, g_of[1:] != g_of[:-1]]) if len(docs) else np.zeros(0, int)
            for s, e in zip(cut, np.r_[cut[1:], len(docs)]):
                g = int(g_of[s])
                try:
                    table = pf.read_row_group(g, columns=columns)
                except (OSError, ValueError) as exc:
                    raise PublishedIndexError(f"{self.file(DOCS_FILE)}: row group {g} unreadable ({exc})") from exc
                yield docs[s:e], table.take(docs[s:e] - offs[g])


class PublishedIndex:
    """Every published document of a corpus, as the segments ``names`` under ``root``: open with
    :meth:`open`; every query streams segment by segment, partition by partition."""

    def __init__(self, root: str, segments: list[_Segment], params: MinHashParams):
        self.root = root
        self.params = params
        self._segments = segments

    @classmethod
    def open(cls, root: str, names: Sequence[str], params: MinHashParams) -> PublishedIndex:
        """Read every segment.json, check its params and that the files it lists exist with their
        recorded size. An empty ``names`` is an empty index."""
        if isinstance(names, str):
            raise PublishedIndexError(f"PublishedIndex.open(names={names!r}): expected a list of segment names")
        dup = sorted({n for n in names if list(names).count(n) > 1})
        if dup:
            raise PublishedIndexError(f"PublishedIndex.open: segment names {dup} given more than once under {root}")
        return cls(root, [_Segment(root, n, params) for n in names], params)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._segments]

    def segment(self, name: str) -> dict[str, Any]:
        """The segment.json of one open segment."""
        for s in self._segments:
            if s.name == name:
                return s.meta
        raise KeyError(name)

    def verify(self) -> dict[str, int]:
        """Re-hash every file against its recorded sha256 (reads everything: tests and the CLI)."""
        files = size = 0
        for s in self._segments:
            for rel, rec in s.meta["files"].items():
                uri = s.file(rel)
                try:
                    got_size, digest = storage.sha256(uri)
                except FileNotFoundError:
                    raise PublishedIndexError(f"{uri}: missing; expected sha256 {rec['sha256']} "
                                              f"({s.json_uri})") from None
                if digest != rec["sha256"] or got_size != rec["bytes"]:
                    raise PublishedIndexError(f"{uri}: sha256 {digest} ({got_size} bytes), expected {rec['sha256']} "
                                              f"({rec['bytes']} bytes) as recorded in {s.json_uri}")
                files += 1
                size += got_size
        return {"files": files, "bytes": size}

    def stats(self) -> dict[str, Any]:
        return {"segments": len(self._segments),
                "documents": sum(s.documents for s in self._segments),
                "bytes": sum(rec["bytes"] for s in self._segments for rec in s.meta["files"].values()),
                "partitions": sum(s.partitions for s in self._segments)}

    # ----------------------------------------------------------------------------------- queries

    def published_prompts(self, prompt_ids: Sequence[str]) -> set[str]:
        """Which of ``prompt_ids`` some published document has."""
        uniq = sorted({str(p) for p in prompt_ids})
        return {uniq[q] for q in self._first_published(KIND_PROMPT, uniq, prompt_keys, "prompt_id")}

    def exact_duplicates(self, text_hashes: Sequence[str]) -> dict[str, str]:
        """text_hash -> a published prompt_id whose normalized text has that hash (the earliest segment's,
        lowest doc), for each of ``text_hashes`` that is published."""
        uniq = sorted(set(text_hashes))
        return {uniq[q]: pid for q, pid in self._first_published(KIND_TEXT, uniq, text_keys, "text_hash").items()}

    def _first_published(self, kind: int, uniq: list[str], to_keys: Any, column: str) -> dict[int, str]:
        """Query index -> prompt_id of the published document whose ``column`` equals ``uniq[query]``: the
        earliest segment's, lowest doc. Keys are 64-bit hashes: every hit is checked against the stored value."""
        out: dict[int, str] = {}
        if not uniq or not self._segments:
            return out
        keys = to_keys(uniq)
        columns = [column] if column == "prompt_id" else [column, "prompt_id"]
        pending = np.ones(len(uniq), bool)
        for seg in self._segments:
            live = np.flatnonzero(pending)
            if not len(live):
                break
            q, d = seg.lookup(np.full(len(live), kind, np.int8), keys[live], CANDIDATES_PER_KEY)
            hits: dict[int, tuple[int, str]] = {}
            for (qq, doc), values in self._resolve_pairs(seg, live[q], d, columns):
                if values[0] == uniq[qq] and (qq not in hits or doc < hits[qq][0]):
                    hits[qq] = (doc, values[-1])
            for qq, (_, pid) in hits.items():
                out[qq] = pid
                pending[qq] = False
        return out

    def near_duplicates(self, sig: np.ndarray, bands: np.ndarray,
                        n_shingles: np.ndarray) -> list[tuple[int, str, float]]:
        """(row, published prompt_id, estimated Jaccard) for each new row with an LSH band collision with
        a published document whose estimated Jaccard is >= ``params.verify_threshold`` (None: every
        candidate); the best match per row (ties: earliest segment, lowest doc). Rows with no shingles
        never match; published signatures are read only for candidates."""
        p = self.params
        sig, bands, n_shingles = np.asarray(sig), np.asarray(bands), np.asarray(n_shingles)
        n = len(sig)
        if sig.ndim != 2 or sig.shape[1] != p.num_perm or sig.dtype != np.uint32:
            raise PublishedIndexError(f"near_duplicates: sig: expected (n, {p.num_perm}) uint32, "
                                      f"got {sig.shape} {sig.dtype}")
        if bands.shape != (n, p.bands) or bands.dtype != np.uint64:
            raise PublishedIndexError(f"near_duplicates: bands: expected ({n}, {p.bands}) uint64, "
                                      f"got {bands.shape} {bands.dtype}")
        if n_shingles.shape != (n,):
            raise PublishedIndexError(f"near_duplicates: n_shingles: expected shape ({n},), got {n_shingles.shape}")
        rows = np.flatnonzero(n_shingles > 0)
        if not len(rows) or not self._segments:
            return []
        qrow = np.repeat(rows, p.bands)
        qkind = np.tile(np.arange(p.bands, dtype=np.int8), len(rows))
        qkey = bands[rows].reshape(-1)
        plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        threshold = p.verify_threshold
        best_j = np.full(n, -1.0)
        best_seg = np.full(n, -1, np.int64)
        best_doc = np.full(n, -1, np.int64)
        for si, seg in enumerate(self._segments):
            plan = plans.get(seg.partitions)
            if plan is None:
                plan = plans[seg.partitions] = _plan(qkind, qkey, seg.partitions)
            q, d = seg.lookup(qkind, qkey, CANDIDATES_PER_KEY, plan)
            if not len(q):
                continue
            r = qrow[q]
            o = np.lexsort((r, d))  # by doc, then row; one pair per (doc, row) however many bands hit
            d, r = d[o], r[o]
            uniq = np.r_[True, (d[1:] != d[:-1]) | (r[1:] != r[:-1])]
            d, r = d[uniq], r[uniq]
            docs, first = np.unique(d, return_index=True)
            first = np.r_[first, len(d)]
            pos = 0
            for chunk_docs, pub in seg.signatures(docs):
                lo, hi = first[pos], first[pos + len(chunk_docs)]
                pos += len(chunk_docs)
                local = np.searchsorted(chunk_docs, d[lo:hi])
                pr = r[lo:hi]
                j = (pub[local] == sig[pr]).mean(axis=1)
                keep = j > best_j[pr] if threshold is None else (j >= threshold) & (j > best_j[pr])
                if not keep.any():
                    continue
                kd, kr, kj = d[lo:hi][keep], pr[keep], j[keep]
                o = np.lexsort((kd, -kj, kr))  # per row: best Jaccard, then lowest doc
                head = o[np.r_[True, kr[o][1:] != kr[o][:-1]]]
                kd, kr, kj = kd[head], kr[head], kj[head]
                better = kj > best_j[kr]  # strictly: an earlier segment or doc wins ties
                best_j[kr[better]], best_seg[kr[better]], best_doc[kr[better]] = kj[better], si, kd[better]
        found = np.flatnonzero(best_seg >= 0)
        pid: dict[int, str] = {}
        for si in np.unique(best_seg[found]):
            sel = found[best_seg[found] == si]
            for (row, _), (value,) in self._resolve_pairs(self._segments[si], sel, best_doc[sel], ["prompt_id"]):
                pid[row] = value
        return [(int(row), pid[int(row)], float(best_j[row])) for row in found]

    # ------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _resolve_pairs(seg: _Segment, q: np.ndarray, d: np.ndarray,
                       columns: list[str]) -> Iterator[tuple[tuple[int, int], tuple]]:
        """((query, doc), values of ``columns``) for every hit, reading docs.parquet row group by row group."""
        if not len(q):
            return
        order = np.argsort(d, kind="stable")
        q, d = q[order], d[order]
        docs, first = np.unique(d, return_index=True)
        pos = 0
        for chunk_docs, table in seg.iter_docs(docs, columns):
            cols = [table.column(c).to_pylist() for c in columns]
            for k, doc in enumerate(chunk_docs):
                i = pos + k
                lo, hi = first[i], first[i + 1] if i + 1 < len(first) else len(d)
                values = tuple(c[k] for c in cols)
                for qq in q[lo:hi]:
                    yield (int(qq), int(doc)), values
            pos += len(chunk_docs)
