"""Clustering embeddings: the choice of k by silhouette on a subsample, k-means++ initialisation,
MiniBatchKMeans over the spilled embeddings in chunks, and each row's nearest centroid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .embedding import CHUNK_ROWS, EmbeddingStore

if TYPE_CHECKING:
    import numpy as np

SAMPLE_ROWS = 2000  # subsample for silhouette (choice of k) and k-means++ initialisation
MAX_CANDIDATES = 8  # values of k tried when n_clusters is "auto"
EPOCHS = 2  # partial_fit passes over the spilled embeddings


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
