"""Object storage through fsspec: ``file://`` by default, ``s3://`` in production.

Writes are atomic: local files are written to a temporary name and renamed; object stores get a
single PUT, which is atomic by construction. Which paths exist is the run layout's business
(``synthcorpus.layout``); when a stage is done is the stage contract's (``synthcorpus.stages.contract``).

Conditional writes (compare-and-swap) for a pointer several processes may switch at once
(``latest.json``): :func:`read_with_token` returns a file's content with a token naming that content,
:func:`write_if` replaces the file only if it still holds what the token names (token None: only if the
file does not exist yet). See :func:`write_if` for how each backend makes that atomic.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import threading
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


def _storage_failure(exc: BaseException) -> bool:
    """An I/O failure of the store: an OSError, or an S3 client's own error (botocore's are not OSErrors:
    an unreachable endpoint is EndpointConnectionError). Told by module, so botocore is never imported here."""
    if isinstance(exc, OSError):
        return True
    return type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "urllib3", "aiohttp")


@contextlib.contextmanager
def _failures(uri: str, what: str) -> Any:
    """Turn a store's failure into one StorageError naming the URI and the operation (FileNotFoundError
    passes: callers decide what a missing file means)."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except Exception as exc:
        if not _storage_failure(exc):
            raise
        raise StorageError(f"{uri}: {what} failed ({type(exc).__name__}: {exc})") from exc


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = _fs(uri)
    with _failures(uri, "write"):
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


def read_bytes(uri: str) -> bytes:
    fs, path = _fs(uri)
    with _failures(uri, "read"):
        return fs.cat_file(path)


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    with _failures(uri, "existence check"):
        return fs.exists(path)


def size(uri: str) -> int | None:
    """The size in bytes of a stored file, None if it does not exist."""
    fs, path = _fs(uri)
    try:
        with _failures(uri, "size"):
            return int(fs.size(path))
    except FileNotFoundError:
        return None


def json_bytes(obj: Any) -> bytes:
    """How a JSON file is stored (write_json, and write_if for latest.json)."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json_bytes(obj))


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
    with _failures(uri, "listing"):
        if not fs.exists(path):
            return []
        found = sorted(fs.find(path))
    proto = uri.split("://", 1)[0] if "://" in uri else "file"
    return [f"{proto}://{p}" if proto != "file" else "file://" + p for p in found]


def list_names(uri: str) -> list[str]:
    """The names of the files and folders directly under a prefix (one listing, no recursion), sorted;
    [] if there is none."""
    fs, path = _fs(uri)
    fs.invalidate_cache(path)  # s3fs caches listings; a page polling a running stage must see new files
    try:
        with _failures(uri, "listing"):
            entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    own = path.rstrip("/")
    return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != own})


def modified(uri: str) -> float | None:
    """When a stored file was last written (POSIX seconds), None if it does not exist or the store does not say."""
    fs, path = _fs(uri)
    try:
        stamp = fs.modified(path)
    except (FileNotFoundError, NotImplementedError):
        return None
    except Exception as exc:  # the store is unreachable: the page says "not known", it does not fail
        if _storage_failure(exc):
            return None
        raise
    return stamp.timestamp() if hasattr(stamp, "timestamp") else None


def delete(uri: str) -> None:
    fs, path = _fs(uri)
    with _failures(uri, "delete"):
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


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return bool({"file", "local"} & set(_protocols(fs)))


# ------------------------------------------------------------------------------------------ streaming


@contextlib.contextmanager
def _parquet_file(uri: str) -> "Any":
    """An open ``pyarrow.parquet.ParquetFile`` (the footer is read, no data yet); errors name the URI."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = _fs(uri)
    try:
        with _failures(uri, "read"), fs.open(path, "rb") as fh:
            yield pq.ParquetFile(fh)
    except pa.ArrowInvalid as exc:
        raise StorageError(f"{uri}: expected a Parquet file ({exc})") from exc


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
    with _failures(uri, "read"), fs.open(path, "rb") as fh:
        return sha256_stream(fh, chunk)


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
                with _failures(self.uri, "write"):
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


# ------------------------------------------------------------------------------------------ conditional writes


def read_with_token(uri: str) -> tuple[bytes | None, str | None]:
    """A file's content and a token naming that content, for :func:`write_if`; ``(None, None)`` if the
    file does not exist. The token is opaque: the S3 ETag on s3://, ``sha256:<hex>`` of the content on
    local and in-memory files."""
    fs, path = _fs(uri)
    with _failures(uri, "read"):
        if _is_s3(fs):
            return _s3_read_with_token(fs, path)
        if _is_local(fs):
            try:
                with open(path, "rb") as fh:  # os.replace is atomic: the old or the new file, whole
                    data = fh.read()
            except FileNotFoundError:
                return None, None
            return data, _content_token(data)
        if _is_memory(fs):
            with _MEMORY_CAS:
                if not fs.exists(path):
                    return None, None
                data = fs.cat_file(path)
            return data, _content_token(data)
    raise _no_cas(uri, fs)


def write_if(uri: str, data: bytes, token: str | None) -> bool:
    """Write ``data`` at ``uri`` only if the file still holds the content ``token`` names (a token from
    :func:`read_with_token`), or, with ``token=None``, only if it does not exist. True if written, False if
    the precondition failed (someone else wrote meanwhile: read again and decide again); any other failure
    raises :class:`StorageError` naming the URI. Every writer of such a file must use this function.

    * ``s3://``: one PutObject with ``If-Match: <etag>`` (``If-None-Match: *`` for token None); the server
      compares and writes atomically, 412 PreconditionFailed (or 409 ConditionalRequestConflict, a
      concurrent conditional write on the same key) is a failed precondition. Needs a server that
      enforces conditional writes (AWS S3 since 2024; SeaweedFS, checked by tests/integration/test_s3_cas.py).
    * local files: the new content goes to a temporary file beside the target, fully written and
      fsynced; then, holding an exclusive ``flock`` on the sibling ``<name>.lock`` (created once, never
      deleted, so every writer locks the same inode), the current content is read and compared with the
      token, and only if it matches is the temporary file ``os.replace``-d over the target (and the
      directory fsynced). It is atomic between processes because every writer compares and replaces
      under the same exclusive lock, so no write can land between another writer's compare and its
      replace; readers need no lock, as ``os.replace`` swaps the whole file in one step (they see the
      old or the new content, never a mix). The lock is released when its descriptor closes, also when
      the process dies. The token is the content's sha256, so this is a compare of values: a file
      rewritten with the same bytes counts as unchanged (harmless for a pointer). ``flock`` is advisory
      and local: the storage must be a local filesystem (NFS and other network filesystems are not
      supported for this); writers that bypass :func:`write_if` are not serialised.
    * ``memory://`` (tests, previews): the store lives in this process; a process-wide lock makes the
      compare and the write one step.
    """
    fs, path = _fs(uri)
    if _is_s3(fs):
        return _s3_write_if(fs, uri, path, data, token)
    with _failures(uri, "conditional write"):
        if _is_local(fs):
            return _local_write_if(path, data, token)
        if _is_memory(fs):
            with _MEMORY_CAS:
                current = fs.cat_file(path) if fs.exists(path) else None
                if (None if current is None else _content_token(current)) != token:
                    return False
                fs.pipe_file(path, data)
                return True
    raise _no_cas(uri, fs)


_MEMORY_CAS = threading.Lock()
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def _content_token(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    return bool({"s3", "s3a"} & set(_protocols(fs))) and hasattr(fs, "_call_s3")


def _is_memory(fs: fsspec.AbstractFileSystem) -> bool:
    return "memory" in _protocols(fs)


def _no_cas(uri: str, fs: fsspec.AbstractFileSystem) -> StorageError:
    return StorageError(f"{uri}: conditional writes are not supported on {fs.protocol} (file://, s3:// and "
                        "memory:// are)")


def _local_write_if(path: str, data: bytes, token: str | None) -> bool:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp: str | None = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:  # written and fsynced before the lock is taken: the lock is held briefly
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        import fcntl

        lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path, "rb") as fh:
                    current: str | None = _content_token(fh.read())
            except FileNotFoundError:
                current = None
            if current != token:
                return False
            os.replace(tmp, path)
            tmp = None
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a crash
            finally:
                os.close(dir_fd)
            return True
        finally:
            os.close(lock)  # releases the flock
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _s3_read_with_token(fs: Any, path: str) -> tuple[bytes | None, str | None]:
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def get() -> tuple[bytes, str]:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            return await resp["Body"].read(), resp["ETag"]
        finally:
            resp["Body"].close()

    try:
        return sync(fs.loop, get)  # content and ETag from one GET: the token names what was read
    except FileNotFoundError:
        return None, None


def _s3_write_if(fs: Any, uri: str, path: str, data: bytes, token: str | None) -> bool:
    bucket, key, _ = fs.split_path(path)
    condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except Exception as exc:  # s3fs turns botocore's ClientError into OSError subclasses (the cause kept)
        if _precondition_failed(exc):
            return False
        raise StorageError(f"{uri}: conditional write failed ({exc})") from exc
    finally:
        fs.invalidate_cache(path)
    return True


def _precondition_failed(exc: BaseException | None) -> bool:
    """Whether an S3 error (or what it was translated from) is a failed write condition."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code in _PRECONDITION_CODES or status == 412:
                return True
        exc, seen = exc.__cause__, seen + 1
    return False
