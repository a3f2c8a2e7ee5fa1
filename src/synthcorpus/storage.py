"""Object storage through fsspec: ``file://`` by default, ``s3://`` in production.

Writes are atomic: local files are written to a temporary name and renamed; object stores get a
single PUT, which is atomic by construction. A shard is *committed* when its data file and then its
marker (``<file>.commit.json``, carrying stats) exist; readers and re-runs trust only committed shards.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from typing import Any
from urllib.parse import unquote

import fsspec


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and the operation."""


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])


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
    """Every file under a prefix, as full URIs, sorted."""
    fs, path = _fs(uri)
    if not fs.exists(path):
        return []
    proto = uri.split("://", 1)[0] if "://" in uri else "file"
    out = []
    for p in sorted(fs.find(path)):
        out.append(f"{proto}://{p}" if proto != "file" else "file://" + p)
    return out


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


def marker(uri: str) -> str:
    return uri + ".commit.json"


def commit(uri: str, table: "Any", stats: dict[str, Any]) -> None:
    """Write a shard atomically, then its marker: a shard without a marker does not exist."""
    write_parquet(uri, table)
    write_json(marker(uri), {"uri": uri, "rows": table.num_rows, **stats})


def committed(uri: str) -> dict[str, Any] | None:
    """The marker's stats if the shard is committed, else None."""
    m = marker(uri)
    if not exists(m) or not exists(uri):
        return None
    return read_json(m)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol
