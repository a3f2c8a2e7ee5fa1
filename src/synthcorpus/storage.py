"""Object storage through fsspec: ``file://`` by default, ``s3://`` in production.

Writes are atomic: local files are written to a temporary name and renamed; object stores get a
single PUT, which is atomic by construction. Which paths exist is the run layout's business
(``synthcorpus.layout``); when a stage is done is the stage contract's (``synthcorpus.stages.contract``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import uuid
from typing import Any
from urllib.parse import unquote

import fsspec

from .layout import join  # noqa: F401  (storage.join: one way of joining URIs)


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and the operation."""


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    if uri.startswith("file://"):
        uri = unquote(uri)  # Path.as_uri() percent-encodes spaces; fsspec does not decode them
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"{uri}: cannot open storage ({exc}); for s3:// install s3fs") from exc


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = _fs(uri)
    try:
        if _is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            fs.pipe_file(path, data)
    except OSError as exc:
        raise StorageError(f"{uri}: write failed ({exc})") from exc


def read_bytes(uri: str) -> bytes:
    fs, path = _fs(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"{uri}: read failed ({exc})") from exc


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.exists(path)


def size(uri: str) -> int | None:
    """The size in bytes of a stored file, None if it does not exist."""
    fs, path = _fs(uri)
    try:
        return int(fs.size(path))
    except FileNotFoundError:
        return None


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: expected JSON ({exc})") from exc


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def list_files(uri: str) -> list[str]:
    """Every file under a prefix, as full URIs, sorted (never from a stale listings cache)."""
    fs, path = _fs(uri)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    proto = uri.split("://", 1)[0] if "://" in uri else "file"
    out = []
    for p in sorted(fs.find(path)):
        out.append(f"{proto}://{p}" if proto != "file" else "file://" + p)
    return out


def list_names(uri: str) -> list[str]:
    """The names of the files and folders directly under a prefix (one listing, no recursion), sorted;
    [] if there is none."""
    fs, path = _fs(uri)
    fs.invalidate_cache(path)  # s3fs caches listings; a page polling a running stage must see new files
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"{uri}: listing failed ({exc})") from exc
    own = path.rstrip("/")
    return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != own})


def modified(uri: str) -> float | None:
    """When a stored file was last written (POSIX seconds), None if it does not exist or the store does not say."""
    fs, path = _fs(uri)
    try:
        stamp = fs.modified(path)
    except (FileNotFoundError, NotImplementedError, OSError):
        return None
    return stamp.timestamp() if hasattr(stamp, "timestamp") else None


def delete(uri: str) -> None:
    fs, path = _fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_parquet(uri: str, table: "Any") -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(uri, buf.getvalue())


def read_parquet(uri: str) -> "Any":
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = read_bytes(uri)
    try:
        return pq.read_table(pa.BufferReader(data))
    except pa.ArrowInvalid as exc:
        raise StorageError(f"{uri}: expected a Parquet file ({exc})") from exc


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


# ------------------------------------------------------------------------------------------ streaming


@contextlib.contextmanager
def _parquet_file(uri: str) -> "Any":
    """An open ``pyarrow.parquet.ParquetFile`` (the footer is read, no data yet); errors name the URI."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = _fs(uri)
    try:
        with fs.open(path, "rb") as fh:
            yield pq.ParquetFile(fh)
    except FileNotFoundError:
        raise
    except pa.ArrowInvalid as exc:
        raise StorageError(f"{uri}: expected a Parquet file ({exc})") from exc
    except OSError as exc:
        raise StorageError(f"{uri}: read failed ({exc})") from exc


def iter_batches(uri: str, columns: list[str] | None = None, batch_size: int = 1024) -> "Any":
    """Record batches of a Parquet file, read lazily (local files and object stores alike), so a stage
    holds one batch at a time. ``columns`` missing from the file are skipped, not an error."""
    with _parquet_file(uri) as pf:
        cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
        if pf.metadata.num_rows:
            yield from pf.iter_batches(batch_size=batch_size, columns=cols)


def parquet_schema(uri: str) -> "Any":
    with _parquet_file(uri) as pf:
        return pf.schema_arrow


def parquet_rows(uri: str) -> int:
    """Row count from the Parquet footer, without reading the data."""
    with _parquet_file(uri) as pf:
        return pf.metadata.num_rows


def sha256(uri: str, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a stored object, read in chunks."""
    from .hashing import sha256_stream

    fs, path = _fs(uri)
    try:
        with fs.open(path, "rb") as fh:
            return sha256_stream(fh, chunk)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"{uri}: read failed ({exc})") from exc


class ParquetStreamWriter:
    """Write a Parquet file batch by batch without holding it in memory: batches go to a local
    temporary file, which :meth:`close` moves into place atomically (rename for local storage, one
    upload for object stores). If the block raises, nothing appears at ``uri``.

    The schema is taken from the first batch unless given; an empty file still gets ``schema`` (or,
    without one, a single ``text`` column) so readers always find a valid Parquet file."""

    def __init__(self, uri: str, schema: "Any" = None):
        self.uri = uri
        self.schema = schema
        self.rows = 0
        self._writer = None
        self._tmp: str | None = None

    def __enter__(self) -> "ParquetStreamWriter":
        return self

    def write(self, data: "Any") -> None:
        """A RecordBatch or a Table (cast to the writer's schema)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if data.num_rows == 0 and self._writer is not None:
            return
        if self._writer is None:
            import tempfile

            if self.schema is None:
                self.schema = data.schema
            fd, self._tmp = tempfile.mkstemp(prefix="synthcorpus-", suffix=".parquet")
            os.close(fd)
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        if data.schema != self.schema:
            data = data.select(self.schema.names).cast(self.schema)
        if isinstance(data, pa.RecordBatch):
            self._writer.write_batch(data)
        else:
            self._writer.write_table(data)
        self.rows += data.num_rows

    def close(self) -> None:
        import pyarrow as pa

        if self._writer is None:
            self.write(pa.table({"text": pa.array([], pa.string())}) if self.schema is None else self.schema.empty_table())
        self._writer.close()
        try:
            fs, path = _fs(self.uri)
            if _is_local(fs):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                try:
                    os.replace(self._tmp, path)
                except OSError as exc:  # the temp dir is on another filesystem: copy beside, then rename
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_then_rename(self._tmp, path)
            else:
                fs.put_file(self._tmp, path)
        except OSError as exc:
            raise StorageError(f"{self.uri}: write failed ({exc})") from exc
        finally:
            self._discard()

    def _discard(self) -> None:
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._writer is not None:
                self._writer.close()
            self._discard()


def _copy_then_rename(src: str, dst: str) -> None:
    import shutil

    tmp = f"{dst}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
