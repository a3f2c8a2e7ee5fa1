"""Streaming Parquet I/O: record batches in, batches out, atomic on close, nothing left on failure."""

from __future__ import annotations

import pyarrow as pa
import pytest

from synthcorpus import storage


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"prompt_id": [f"p{i}" for i in range(start, start + n)], "text": [f"text {i}" for i in range(start, start + n)]})


def test_iter_batches_reads_in_bounded_batches_and_projects_columns(tmp_path):
    uri = (tmp_path / "a.parquet").as_uri()
    storage.write_parquet(uri, table(2500))
    batches = list(storage.iter_batches(uri, ["text", "missing"], batch_size=1000))
    assert [b.num_rows for b in batches] == [1000, 1000, 500]
    assert all(b.schema.names == ["text"] for b in batches)
    assert storage.parquet_rows(uri) == 2500
    storage.write_parquet(uri, table(0))
    assert list(storage.iter_batches(uri)) == []


def test_stream_writer_writes_batches_atomically(tmp_path):
    uri = (tmp_path / "out" / "b.parquet").as_uri()
    with storage.ParquetStreamWriter(uri) as w:
        for k in range(3):
            w.write(table(100, start=100 * k).to_batches()[0])
        assert not storage.exists(uri)  # nothing visible until close
    assert w.rows == 300
    assert storage.read_parquet(uri).column("prompt_id").to_pylist() == [f"p{i}" for i in range(300)]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.parquet"]  # no temp file beside it


def test_stream_writer_leaves_nothing_when_the_block_fails(tmp_path):
    uri = (tmp_path / "c.parquet").as_uri()
    with pytest.raises(RuntimeError):
        with storage.ParquetStreamWriter(uri) as w:
            w.write(table(10))
            raise RuntimeError("engine died")
    assert not storage.exists(uri)


def test_stream_writer_empty_file_keeps_the_schema(tmp_path):
    uri = (tmp_path / "d.parquet").as_uri()
    schema = table(1).schema
    with storage.ParquetStreamWriter(uri, schema):
        pass
    assert storage.read_parquet(uri).schema == schema and storage.parquet_rows(uri) == 0


def test_sha256_matches_the_bytes(tmp_path):
    import hashlib

    uri = (tmp_path / "e.parquet").as_uri()
    storage.write_parquet(uri, table(50))
    data = storage.read_bytes(uri)
    assert storage.sha256(uri, chunk=100) == (len(data), hashlib.sha256(data).hexdigest())
