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


def near_duplicates(texts: list[str], groups: list[str] | None = None, threshold: float = NEAR_DUP_THRESHOLD) -> list[int]:
    """Indexes of texts that have a near-duplicate (word 5-gram Jaccard >= threshold) earlier in the list,
    within the same group. The corpus near-dedup's MinHash + LSH bands (``quality.minhash``, here 16 bands
    x 4 rows: P(candidate) at Jaccard 0.8 ~ 0.999, at 0.5 ~ 0.64) propose candidates; exact Jaccard
    confirms them."""
    from .minhash import MinHashParams, band_hashes, batch_signatures

    params = MinHashParams(ngram=_SHINGLE, bands=_BANDS, rows=_ROWS, seed=_SEED)
    sig, _ = batch_signatures(list(texts), params)
    bands = band_hashes(sig, params)
    buckets: dict[tuple, list[int]] = {}
    shingles: list[set[int]] = []
    dups = []
    for i, text in enumerate(texts):
        sh = _shingles(text)
        shingles.append(sh)
        group = groups[i] if groups else ""
        candidates: set[int] = set()
        for band in range(_BANDS):
            key = (group, band, int(bands[i, band]))
            candidates.update(buckets.setdefault(key, []))
            buckets[key].append(i)
        for j in candidates:
            other = shingles[j]
            if len(sh & other) / len(sh | other) >= threshold:
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
