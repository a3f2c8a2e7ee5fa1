"""c-TF-IDF keywords per cluster (BERTopic's class-based TF-IDF): the fallback label of a web cluster."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

# Letters only, 3+ characters: no numbers, no "x1", no single letters.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"
KEYWORDS = 5  # c-TF-IDF keywords stored per web cluster


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
