"""MinHash near-dedup across a whole run, in two sharded steps (like datatrove's four MinHash stages,
folded into two and streamed).

1. ``write_signatures`` (one task per shard: the ``minhash_signatures`` stage): word n-gram shingles over
   ``normalize(text)`` (the same normal form as exact dedup), MinHash with ``bands * rows`` universal hash
   functions, and one 64-bit *band hash* per band. Written to one Parquet file per shard with columns
   ``shard, row, prompt_id, n_shingles, band_00 .. band_NN, sig``. Parquet is columnar, so bucketing
   reads one ``band_XX`` column at a time and never the full signatures.
2. ``find_clusters`` (one task for the run: the ``near_dedup`` stage): for each band, a sort of that band's hashes over the whole
   run groups equal hashes; every member of a group is paired with the group's first document
   (star, O(n) pairs). Candidate pairs are optionally *verified* by the estimated Jaccard (share of equal
   MinHash values in the full ``sig``, read only for documents that are in some pair), then joined
   by connected components; each cluster keeps its first document in the global order
   (shard index, row) and lists the rest as duplicates.

Hashing is deterministic across processes and machines (no Python ``hash()``, no RNG streams):
words are hashed with xxh3-64 (seeded), n consecutive word hashes are combined into a 64-bit shingle
hash with a multiply/xor/finalizer chain in numpy, and the permutation coefficients come from
splitmix64 of the seed. Each document's signature depends only on its own text, so results do not
depend on how documents are split into shards or batches, only on the global (shard, row) order.

MinHash: multiply-shift universal hashing, ``h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32`` with x the
64-bit shingle hash and random 64-bit a_i (odd), b_i — a 2-universal family (Dietzfelbinger) that
needs no 128-bit products, so one uint64 multiply, add and shift per (shingle, function) in numpy.
Signatures are uint32. (Not ``(a*x + b) mod (2^61-1)`` with a, x < 2^32: that product stays below
2^61 for most x, so the map is monotonic in x and every function picks the same minimum shingle —
the estimate degenerates; computing the mod-p product exactly needs 128-bit arithmetic.)
Vectorized over (shingles x hash functions) in chunks of ``CHUNK`` shingles; ``np.minimum.reduceat``
takes each document's minimum.

Documents with fewer than ``ngram`` words get one shingle made of all their words; documents with no
words (empty after normalization) get no signature (``n_shingles == 0``) and are never clustered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from .. import storage
from ..spec import NearDedupSpec
from ..text import normalize

_DEFAULTS = NearDedupSpec()  # one set of defaults: the spec's
CHUNK = 4096  # shingles per vectorized MinHash block: CHUNK x bands*rows x 8 bytes (~3.7 MB at 112)
_MASK64 = (1 << 64) - 1
_MAX = np.uint32(0xFFFFFFFF)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class MinHashParams:
    ngram: int = _DEFAULTS.ngram
    bands: int = _DEFAULTS.bands
    rows: int = _DEFAULTS.rows
    seed: int = _DEFAULTS.seed
    # Candidate pairs whose estimated Jaccard (share of equal MinHash values) is below this are dropped;
    # None keeps every LSH candidate (datatrove's behaviour). 0.6 removes band-hash luck at J ~ 0.5
    # (candidate probability 5 % at 14x8) while keeping pairs near the LSH threshold (~0.72).
    verify_threshold: float | None = _DEFAULTS.verify_threshold
    batch_size: int = 1024

    @classmethod
    def from_spec(cls, near_dedup: NearDedupSpec) -> MinHashParams:
        nd = near_dedup
        return cls(ngram=nd.ngram, bands=nd.bands, rows=nd.rows, seed=nd.seed, verify_threshold=nd.verify_threshold)

    def __post_init__(self) -> None:
        for name in ("ngram", "bands", "rows", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MinHashParams.{name}: expected >= 1, got {getattr(self, name)}")
        if self.verify_threshold is not None and not 0.0 <= self.verify_threshold <= 1.0:
            raise ValueError(f"MinHashParams.verify_threshold: expected 0..1 or None, got {self.verify_threshold}")

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def threshold(self) -> float:
        """Jaccard at which a pair becomes a candidate with probability ~1/2: (1/b)^(1/r)."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def signature_key(self) -> dict[str, int]:
        """What the signatures depend on (verify_threshold and batch_size do not change them)."""
        return {"ngram": self.ngram, "bands": self.bands, "rows": self.rows, "seed": self.seed}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- hashing


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized, in place on a uint64 array (wrapping arithmetic)."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def _coefficients(params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    base = _splitmix64(params.seed)
    a = [_splitmix64(base + 2 * i) | 1 for i in range(params.num_perm)]  # odd 64-bit
    b = [_splitmix64(base + 2 * i + 1) for i in range(params.num_perm)]
    return np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)


def _word_seed(params: MinHashParams) -> int:
    return _splitmix64(params.seed ^ 0x5A5A5A5A)


def _hash_words(words: list[str], seed: int) -> np.ndarray:
    try:
        import xxhash

        fn = xxhash.xxh3_64_intdigest
        return np.fromiter((fn(w.encode(), seed) for w in words), dtype=np.uint64, count=len(words))
    except ImportError:  # pragma: no cover - xxhash is installed in the project venv
        import hashlib

        key = seed.to_bytes(8, "little")
        data = b"".join(hashlib.blake2b(w.encode(), digest_size=8, key=key).digest() for w in words)
        return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def _combine(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    h ^= w
    h *= _K
    h ^= h >> np.uint64(29)
    return h


def _shingle_hashes(texts: list[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes in document order, shingle count per document)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = params.ngram
    norm = [normalize(t) if t else "" for t in texts]
    arr = pa.array([s if s else None for s in norm], pa.large_string())
    lists = pc.split_pattern(arr, " ")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(lists)
    ndocs = len(texts)
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    if len(flat) == 0:
        return np.zeros(0, np.uint64), counts
    enc = pc.dictionary_encode(flat)
    word_h = _hash_words(enc.dictionary.to_pylist(), _word_seed(params))[enc.indices.to_numpy()]
    total = len(word_h)
    offsets = np.zeros(ndocs + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])

    parts, owners = [], []
    if total >= n:
        m = total - n + 1
        h = word_h[:m].copy()
        for k in range(1, n):
            _combine(h, word_h[k : k + m])
        _mix(h)
        doc_of = np.repeat(np.arange(ndocs), lengths)[:m]
        valid = np.arange(m) + n <= offsets[doc_of + 1]
        parts.append(h[valid])
        owners.append(doc_of[valid])
    short = np.flatnonzero((lengths > 0) & (lengths < n))
    if len(short):
        hs = np.empty(len(short), np.uint64)
        for j, d in enumerate(short):  # rare: one shingle of all the words of a short document
            h = word_h[offsets[d] : offsets[d] + 1].copy()
            for k in range(1, int(lengths[d])):
                _combine(h, word_h[offsets[d] + k : offsets[d] + k + 1])
            hs[j] = _mix(h)[0]
        parts.append(hs)
        owners.append(short)
    sh = np.concatenate(parts)
    if len(parts) > 1:
        sh = sh[np.argsort(np.concatenate(owners), kind="stable")]
    return sh, counts


def _minhash(shingles: np.ndarray, counts: np.ndarray, params: MinHashParams) -> np.ndarray:
    a, b = _coefficients(params)
    nd, H = len(counts), params.num_perm
    sig = np.full((nd, H), _MAX, dtype=np.uint32)
    if len(shingles) == 0:
        return sig
    x = shingles
    owner = np.repeat(np.arange(nd), counts)
    buf = np.empty((CHUNK, H), np.uint64)
    for start in range(0, len(x), CHUNK):
        xs, ow = x[start : start + CHUNK], owner[start : start + CHUNK]
        s = len(xs)
        y = buf[:s]
        np.multiply(xs[:, None], a[None, :], out=y)
        y += b
        y >>= np.uint64(32)
        starts = np.flatnonzero(np.r_[True, ow[1:] != ow[:-1]])
        red = np.minimum.reduceat(y, starts, axis=0).astype(np.uint32)
        ids = ow[starts]
        sig[ids] = np.minimum(sig[ids], red)
    return sig


def band_hashes(sig: np.ndarray, params: MinHashParams) -> np.ndarray:
    """(n, bands) uint64: a 64-bit hash of each band's ``rows`` MinHash values."""
    v = sig.reshape(len(sig), params.bands, params.rows)
    seeds = np.array([_splitmix64(params.seed * 1000003 + 17 + i) for i in range(params.bands)], np.uint64)
    h = np.broadcast_to(seeds, (len(sig), params.bands)).copy()
    for j in range(params.rows):
        _combine(h, v[:, :, j].astype(np.uint64))
        _mix(h)
    return h


def batch_signatures(texts: list[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    sh, counts = _shingle_hashes(texts, params)
    return _minhash(sh, counts, params), counts


def _iter_texts(source: Any, batch_size: int) -> Iterator[list[str]]:
    import pyarrow as pa

    if isinstance(source, pa.Table):
        source = source.select(["text"]).to_batches(max_chunksize=batch_size)
    elif isinstance(source, pa.RecordBatch):
        source = [source]
    items = list(source) if not isinstance(source, Iterator) else source
    pending: list[str] = []
    for item in items:
        if isinstance(item, str) or item is None:
            pending.append(item or "")
            if len(pending) >= batch_size:
                yield pending
                pending = []
            continue
        if pending:
            yield pending
            pending = []
        col = item.column("text") if isinstance(item, (pa.RecordBatch, pa.Table)) else item
        yield [t or "" for t in col.to_pylist()]
    if pending:
        yield pending


def signatures(table_or_batches: Any, params: MinHashParams | None = None) -> np.ndarray:
    """(n, bands*rows) uint32 MinHash signatures of a pyarrow Table / RecordBatch / iterable of record
    batches (a ``text`` column) or of plain strings. Empty documents get all-max rows."""
    params = params or MinHashParams()
    out = [batch_signatures(texts, params)[0] for texts in _iter_texts(table_or_batches, params.batch_size)]
    return np.concatenate(out) if out else np.zeros((0, params.num_perm), np.uint32)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


# ------------------------------------------------------------------------------------ stage: signatures


def band_columns(params: MinHashParams) -> list[str]:
    return [f"band_{i:02d}" for i in range(params.bands)]


def _schema(params: MinHashParams, index: int) -> Any:
    import json

    import pyarrow as pa

    fields = [pa.field("shard", pa.int32()), pa.field("row", pa.int64()), pa.field("prompt_id", pa.string()),
              pa.field("n_shingles", pa.int32())]
    fields += [pa.field(c, pa.uint64()) for c in band_columns(params)]
    fields.append(pa.field("sig", pa.list_(pa.uint32(), params.num_perm)))
    meta = {"synthcorpus.minhash": json.dumps({"shard": index, **params.signature_key()})}
    return pa.schema(fields, metadata=meta)


def write_signatures(documents_uri: str, out_uri: str, shard: int, params: MinHashParams | None = None) -> dict[str, Any]:
    """Signatures + band hashes of one document shard (``shard``: its index in the run's global order)
    -> ``out_uri``, streamed one record batch of texts at a time. Returns rows and empty-shingle counts."""
    import pyarrow as pa

    params = params or MinHashParams()
    schema = _schema(params, shard)
    rows = empty = 0
    with storage.ParquetStreamWriter(out_uri, schema) as writer:
        for batch in storage.iter_batches(documents_uri, ["text", "prompt_id"], params.batch_size):
            texts = [t or "" for t in batch.column("text").to_pylist()]
            sig, counts = batch_signatures(texts, params)
            bands = band_hashes(sig, params)
            n = len(texts)
            pid = batch.column("prompt_id").cast(pa.string()) if "prompt_id" in batch.schema.names else pa.nulls(n, pa.string())
            arrays = [pa.array(np.full(n, shard, np.int32)), pa.array(np.arange(rows, rows + n, dtype=np.int64)), pid,
                      pa.array(counts.astype(np.int32))]
            arrays += [pa.array(bands[:, i]) for i in range(params.bands)]
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), params.num_perm))
            writer.write(pa.record_batch(arrays, schema=schema))
            rows += n
            empty += int((counts == 0).sum())
    return {"rows": rows, "no_shingles": empty, "params": params.signature_key()}


# -------------------------------------------------------------------------------------- clusters


class _Files:
    """Signature files in global order (shard index, then uri), with row offsets."""

    def __init__(self, uris: Iterable[str]):
        import json

        import pyarrow.parquet as pq

        entries = []
        for uri in uris:
            with self._open(uri) as fh:
                pf = pq.ParquetFile(fh)
                meta = json.loads(pf.schema_arrow.metadata[b"synthcorpus.minhash"])
                entries.append((meta.pop("shard"), uri, pf.metadata.num_rows, meta))
        entries.sort(key=lambda e: (e[0], e[1]))
        keys = {json.dumps(e[3], sort_keys=True) for e in entries}
        if len(keys) > 1:
            raise ValueError(f"signature files were made with different parameters: {sorted(keys)}")
        self.params = entries[0][3] if entries else None
        self.uris = [e[1] for e in entries]
        self.offsets = np.zeros(len(entries) + 1, np.int64)
        np.cumsum([e[2] for e in entries], out=self.offsets[1:])

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    @staticmethod
    def _open(uri: str) -> Any:
        fs, path = storage._fs(uri)
        return fs.open(path, "rb")

    def column(self, name: str) -> Iterator[tuple[int, Any]]:
        import pyarrow.parquet as pq

        for i, uri in enumerate(self.uris):
            with self._open(uri) as fh:
                yield i, pq.ParquetFile(fh).read(columns=[name]).column(0)

    def gather(self, name: str, idx: np.ndarray) -> list[Any]:
        """Values of a column at sorted global indexes, reading one file's column at a time."""
        out: list[Any] = []
        for i, col in self.column(name):
            lo, hi = np.searchsorted(idx, self.offsets[i : i + 2])
            if hi > lo:
                out.append(col.take(idx[lo:hi] - self.offsets[i]))
        return out


def _candidate_pairs(files: _Files, params: MinHashParams) -> np.ndarray:
    valid = np.concatenate([c.to_numpy() > 0 for _, c in files.column("n_shingles")])
    idx = np.flatnonzero(valid)
    pairs = []
    for name in band_columns(params):
        keys = np.concatenate([c.to_numpy() for _, c in files.column(name)])[idx]
        order = np.argsort(keys, kind="stable")  # stable: equal hashes stay in global order
        sk, so = keys[order], idx[order]
        new = np.r_[True, sk[1:] != sk[:-1]]
        first = so[new][np.cumsum(new) - 1]
        m = so != first
        if m.any():
            pairs.append(np.stack([first[m], so[m]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    p = np.concatenate(pairs)
    return np.unique(p, axis=0)


def _verify(files: _Files, pairs: np.ndarray, params: MinHashParams) -> np.ndarray:
    nodes = np.unique(pairs)
    import pyarrow.compute as pc

    chunks = files.gather("sig", nodes)
    sig = np.concatenate([pc.list_flatten(c).to_numpy().reshape(-1, params.num_perm) for c in chunks])
    ia, ib = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    keep = np.empty(len(pairs), bool)
    step = 65536
    for s in range(0, len(pairs), step):
        eq = sig[ia[s : s + step]] == sig[ib[s : s + step]]
        keep[s : s + step] = eq.mean(axis=1) >= params.verify_threshold
    return pairs[keep]


def _components(pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components as sorted arrays of global indexes, ordered by their first member."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = np.unique(pairs)
    ia, ib = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    g = coo_matrix((np.ones(len(pairs), np.int8), (ia, ib)), shape=(len(nodes), len(nodes)))
    _, labels = connected_components(g, directed=False)
    order = np.lexsort((nodes, labels))
    lab, nd = labels[order], nodes[order]
    cut = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    groups = np.split(nd, cut[1:])
    groups.sort(key=lambda g_: int(g_[0]))
    return groups


def find_cluster_indexes(signature_uris: Iterable[str], params: MinHashParams | None = None) -> tuple[Any, list[np.ndarray]]:
    """(files in global order, clusters as sorted arrays of global row indexes; the first is kept)."""
    params = params or MinHashParams()
    files = _Files(signature_uris)
    if files.params is not None and files.params != params.signature_key():
        raise ValueError(f"signatures were made with {files.params}, not {params.signature_key()}")
    if files.n == 0:
        return files, []
    pairs = _candidate_pairs(files, params)
    if len(pairs) and params.verify_threshold is not None:
        pairs = _verify(files, pairs, params)
    if not len(pairs):
        return files, []
    return files, _components(pairs)


def find_clusters(signature_uris: Iterable[str], params: MinHashParams | None = None) -> list[tuple[str, list[str]]]:
    """Near-duplicate clusters over all signature shards: ``[(keep_prompt_id, [dup_prompt_ids]), ...]``,
    ordered by the kept document's global position (shard index, row); duplicates likewise ordered."""
    files, groups = find_cluster_indexes(signature_uris, params)
    if not groups:
        return []
    nodes = np.unique(np.concatenate(groups))
    ids: list[Any] = []
    for chunk in files.gather("prompt_id", nodes):
        ids.extend(chunk.to_pylist())
    pos = {int(n): ids[i] for i, n in enumerate(nodes)}
    return [(pos[int(g[0])], [pos[int(x)] for x in g[1:]]) for g in groups]
