"""Storage and publish on real S3 (SeaweedFS): the s3:// path through fsspec/s3fs, end to end."""

from __future__ import annotations

import uuid

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

from synthcorpus import storage
from synthcorpus.publish import verify_version
from synthcorpus.spec import load_spec
from synthcorpus.stages.contract import RunContext
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine
from tests.unit.test_pipeline import run_all


@pytest.fixture
def bucket(seaweedfs, monkeypatch):
    name = f"corpora-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", f"s3://{name}/synthcorpus")
    return name


def test_storage_primitives_on_s3(bucket):
    uri = f"s3://{bucket}/t/a.json"
    storage.write_json(uri, {"a": 1})
    assert storage.read_json(uri) == {"a": 1}
    assert storage.list_files(f"s3://{bucket}/t") == [uri]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{bucket}/t/missing.json")


def test_pipeline_publishes_a_version_on_s3(bucket, tmp_path):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6, **{"publish.rows_per_file": 4})))
    version = run_all(spec_path, "s3run", FakeEngine())["outputs"]["version"]
    assert version == f"s3://{bucket}/synthcorpus/tiny/versions/s3run"
    manifest = verify_version(version)
    assert manifest["rows"] == 6 and len(manifest["files"]) == 2
    fs = s3fs.S3FileSystem()
    table = pq.read_table(f"{bucket}/synthcorpus/tiny/versions/s3run/data", filesystem=fs)
    assert table.num_rows == 6
    run = RunContext.create(load_spec(spec_path), "s3run")
    assert storage.read_json(run.layout.latest)["version"] == "s3run"
    assert storage.exists(storage.join(run.layout.output("quality_gate", "data_docs"), "index.html"))


def test_streaming_parquet_on_s3(bucket):
    import pyarrow as pa

    uri = f"s3://{bucket}/t/stream.parquet"
    with storage.ParquetStreamWriter(uri) as w:
        for k in range(4):
            w.write(pa.table({"i": list(range(k * 1000, (k + 1) * 1000))}))
    assert storage.parquet_rows(uri) == 4000
    batches = list(storage.iter_batches(uri, batch_size=1500))
    assert [b.num_rows for b in batches] == [1500, 1500, 1000]
    assert pa.Table.from_batches(batches).column("i").to_pylist() == list(range(4000))
    size, digest = storage.sha256(uri)
    assert size == len(storage.read_bytes(uri)) and len(digest) == 64
