"""Diversity report: how balanced the prompt plan is, how many prompts are near-duplicates, and how
concentrated the generated documents' openings are (Cosmopedia fought "Once upon a time" openings)."""

from __future__ import annotations

import re
import zlib
from collections import Counter
from typing import Any, Iterable

_WORDS = re.compile(r"\w+", re.UNICODE)

OPENING_WORDS = 8
TOP_OPENINGS = 20
NEAR_DUP_THRESHOLD = 0.8
_SHINGLE = 5
_BANDS, _ROWS, _SEED = 16, 4, 1234  # 64 hashes; P(candidate) at Jaccard 0.8 ~ 0.999, at 0.5 ~ 0.64


def opening(text: str, n: int = OPENING_WORDS) -> str:
    return " ".join(w.lower() for w in _WORDS.findall(text)[:n])


def opening_report(texts: Iterable[str]) -> dict[str, Any]:
    """Share of the most common first-8-word openings; ``max_opening_share`` is what the gate can bound."""
    return opening_report_from_counts(Counter(opening(t) for t in texts if t and t.strip()))


def opening_report_from_counts(counts: Counter[str]) -> dict[str, Any]:
    """The same report from opening counts (merged from per-shard counts, so no stage needs every text)."""
    total = sum(counts.values())
    top = [{"opening": o, "count": c, "share": round(c / total, 6)} for o, c in counts.most_common(TOP_OPENINGS)]
    return {
        "documents": total,
        "distinct_openings": len(counts),
        "top": top,
        "top20_share": round(sum(t["count"] for t in top) / total, 6) if total else 0.0,
        "max_opening_share": top[0]["share"] if top else 0.0,
    }


def _shingles(text: str) -> set[int]:
    words = [w.lower() for w in _WORDS.findall(text)]
    if len(words) < _SHINGLE:
        return {zlib.crc32(" ".join(words).encode())}
    return {zlib.crc32(" ".join(words[i : i + _SHINGLE]).encode()) for i in range(len(words) - _SHINGLE + 1)}


CHUNK = 1024  # texts per MinHash batch: the shingle-hash arrays of one chunk only are in memory


def near_duplicates(texts: list[str], groups: list[str] | None = None, threshold: float = NEAR_DUP_THRESHOLD) -> list[int]:
    """Indexes of texts that have a near-duplicate (word 5-gram Jaccard >= threshold) earlier in the list,
    within the same group. The corpus near-dedup's MinHash + LSH bands (``quality.minhash``, here 16 bands
    x 4 rows: P(candidate) at Jaccard 0.8 ~ 0.999, at 0.5 ~ 0.64) propose candidates; exact Jaccard
    confirms them.

    Memory: signatures are computed :data:`CHUNK` texts at a time and only their band hashes are kept
    (n x 16 uint64); a band's buckets are runs of equal keys in a stable sort (no dict of lists); shingles
    (sorted uint32 arrays, not Python sets) are built only for texts that share a bucket with an earlier one.
    See benchmarks/diversity_bench.py for its memory and time next to the previous implementation."""
    import numpy as np

    from .minhash import MinHashParams, band_hashes, batch_signatures

    n = len(texts)
    if n == 0:
        return []
    params = MinHashParams(ngram=_SHINGLE, bands=_BANDS, rows=_ROWS, seed=_SEED)
    bands = np.empty((n, _BANDS), np.uint64)
    for lo in range(0, n, CHUNK):
        sig, _ = batch_signatures(list(texts[lo : lo + CHUNK]), params)
        bands[lo : lo + len(sig)] = band_hashes(sig, params)
    gid = np.zeros(n, np.int64)
    if groups:
        # A group's id folded into every band hash: a collision only adds a candidate that the group check drops.
        ids = {g: k for k, g in enumerate(dict.fromkeys(groups))}
        gid = np.fromiter((ids[g] for g in groups), np.int64, n)
        bands ^= ((gid.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))[:, None]
    # Per band, a stable sort by key: a bucket is a run of equal keys, in index order; starts[b, pos] is where
    # the run holding sorted position pos begins, at[b, i] where text i sits.
    order = np.argsort(bands, axis=0, kind="stable").T  # (bands, n)
    ranked = np.take_along_axis(bands.T, order, axis=1)
    first = np.ones(ranked.shape, bool)
    first[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    starts = np.maximum.accumulate(np.where(first, np.arange(n), 0), axis=1)
    at = np.empty_like(order)
    np.put_along_axis(at, order, np.arange(n)[None, :].repeat(_BANDS, 0), axis=1)
    del ranked
    later = np.flatnonzero(~np.take_along_axis(first, at, axis=1).all(axis=0))  # in some bucket after another text
    shingles: dict[int, np.ndarray] = {}  # sorted unique uint32 5-gram hashes, for texts that meet a candidate

    def shingle_set(i: int) -> np.ndarray:
        if i not in shingles:
            shingles[i] = np.fromiter(_shingles(texts[i]), np.uint32)
            shingles[i].sort()
        return shingles[i]

    dups = []
    for i in later.tolist():
        # The earlier texts of i's buckets in its group, those sharing the most bands first (a near-copy shares
        # nearly all 16: usually the first candidate confirms it).
        cands = np.concatenate([order[b, starts[b, at[b, i]] : at[b, i]] for b in range(_BANDS)])
        cands = cands[gid[cands] == gid[i]]
        if not cands.size:
            continue
        uniq, shared = np.unique(cands, return_counts=True)
        sh = shingle_set(i)
        for j in uniq[np.argsort(-shared, kind="stable")].tolist():
            other = shingle_set(j)
            inter = np.intersect1d(sh, other, assume_unique=True).size
            if inter / (sh.size + other.size - inter) >= threshold:
                dups.append(i)
                break
    return dups


def prompt_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Distribution of the plan and the near-duplicate rate among prompts of the same template and audience."""
    n = len(rows)
    dist = {k: dict(sorted(Counter(r[k] for r in rows).items())) for k in ("topic", "format", "audience", "language", "seed_kind")}
    dups = near_duplicates([r["prompt"] for r in rows], [f"{r['template']}|{r['audience']}" for r in rows])
    return {
        "prompts": n,
        "distribution": dist,
        "topic_in_prompt_share": round(sum(bool(r["topic_in_prompt"]) for r in rows) / n, 6) if n else 0.0,
        "near_duplicate_threshold": NEAR_DUP_THRESHOLD,
        "near_duplicates": len(dups),
        "near_duplicate_rate": round(len(dups) / n, 6) if n else 0.0,
        "prompt_openings": opening_report(r["prompt"] for r in rows)["top"][:5],
    }
