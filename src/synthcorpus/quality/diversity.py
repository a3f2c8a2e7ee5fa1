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
_BANDS, _ROWS = 16, 4  # 64 hashes; P(candidate) at Jaccard 0.8 ~ 0.999, at 0.5 ~ 0.64 (then confirmed exactly)


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
    within the same group. MinHash + LSH banding proposes candidates; exact Jaccard confirms them."""
    import numpy as np

    # Multiply-shift hashing (a 2-universal family): the top 32 bits of (a*x + b) mod 2^64. A plain
    # (a*x + b) mod p with small a and x never wraps and would rank shingles alike for every hash.
    rng = np.random.default_rng(1234)
    a = rng.integers(1, 1 << 63, size=_BANDS * _ROWS, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, size=_BANDS * _ROWS, dtype=np.uint64)
    buckets: dict[tuple, list[int]] = {}
    shingles: list[set[int]] = []
    dups = []
    for i, text in enumerate(texts):
        sh = _shingles(text)
        shingles.append(sh)
        x = np.fromiter(sh, dtype=np.uint64, count=len(sh))
        x = x * np.uint64(0x9E3779B97F4A7C15)  # spread the 32-bit crc over 64 bits
        sig = ((np.outer(x, a) + b) >> np.uint64(32)).min(axis=0)  # uint64 arithmetic wraps mod 2^64
        group = groups[i] if groups else ""
        candidates: set[int] = set()
        for band in range(_BANDS):
            key = (group, band, sig[band * _ROWS : (band + 1) * _ROWS].tobytes())
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
