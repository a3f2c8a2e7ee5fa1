"""Seed sources on real S3 (SeaweedFS): Parquet, JSONL and a directory of Parquet files read from s3:// URIs."""

from __future__ import annotations

import io
import json
import uuid

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from synthcorpus import storage
from synthcorpus.seeds import SeedError, read_samples, read_source
from synthcorpus.spec import SampleSource, load_spec
from synthcorpus.stages.contract import RunContext, execute
from tests.conftest import tiny_spec_dict, write_spec

TEXTS = [f"Seed paragraph {i} about comets, orbits and the night sky." for i in range(40)]


@pytest.fixture(scope="module")
def bucket(seaweedfs):
    """One bucket for the module: every new bucket makes SeaweedFS allocate volumes, which it has few of."""
    name = f"seeds-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": list(range(40)), "text": TEXTS}), buf)
    client.put_object(Bucket=name, Key="web/samples.parquet", Body=buf.getvalue())
    jsonl = "".join(json.dumps({"instruction": t, "n": i}) + "\n" for i, t in enumerate(TEXTS[:15]))
    client.put_object(Bucket=name, Key="instr/seeds.jsonl", Body=jsonl.encode())
    for part, chunk in enumerate((TEXTS[:25], TEXTS[25:])):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": chunk}), buf)
        client.put_object(Bucket=name, Key=f"webdir/part-{part}.parquet", Body=buf.getvalue())
    s3fs.S3FileSystem.clear_instance_cache()
    return name


def test_parquet_source_on_s3(bucket):
    uri = f"s3://{bucket}/web/samples.parquet"
    read = read_source(SampleSource(path=uri, sample_size=12, seed=3), uri, "seeds.web_samples")
    assert len(read.texts) == 12 and set(read.texts) <= set(TEXTS)
    assert read.format == "parquet" and read.rows_read == 40
    assert read.sha256 is None and read.etag  # s3: the object's ETag stands in for a content hash
    again = read_samples(SampleSource(path=uri, sample_size=12, seed=3), uri, "seeds.web_samples")
    assert again == read.texts


def test_jsonl_source_on_s3(bucket):
    uri = f"s3://{bucket}/instr/seeds.jsonl"
    texts = read_samples(SampleSource(path=uri, text_column="instruction"), uri, "seeds.instructions")
    assert texts == TEXTS[:15]


def test_parquet_directory_on_s3(bucket):
    uri = f"s3://{bucket}/webdir"
    read = read_source(SampleSource(path=uri), uri, "seeds.web_samples")
    assert read.texts == TEXTS and read.files == 2 and read.format == "parquet_dir"


def test_s3_errors_name_the_uri_and_field(bucket):
    missing = f"s3://{bucket}/web/missing.parquet"
    with pytest.raises(SeedError, match=rf"^{missing}: seeds.web_samples.path: expected an existing file or directory"):
        read_samples(SampleSource(path=missing), missing, "seeds.web_samples")
    uri = f"s3://{bucket}/instr/seeds.jsonl"
    with pytest.raises(SeedError, match=rf"^{uri}: seeds.instructions.text_column: line 1: expected a key 'text'"):
        read_samples(SampleSource(path=uri), uri, "seeds.instructions")


def test_load_seeds_from_s3_sources(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", f"s3://{bucket}/synthcorpus")
    seeds = {
        "web_samples": {"path": f"s3://{bucket}/web/samples.parquet", "sample_size": 10, "seed": 1},
        "instructions": {"path": f"s3://{bucket}/instr/seeds.jsonl", "text_column": "instruction"},
    }
    run = RunContext.create(load_spec(write_spec(tmp_path, tiny_spec_dict(seeds=seeds))), "s3seeds")
    result = execute(run, "seeds")
    assert result["outputs"]["seeds"] == f"s3://{bucket}/synthcorpus/tiny/runs/s3seeds/seeds/seeds.parquet"
    table = storage.read_parquet(result["outputs"]["seeds"])
    assert table.num_rows == 25 and result["stats"]["by_kind"] == {"outline": 0, "web": 10, "instruction": 15}
    assert result["stats"]["sources"]["web_samples"]["etag"]
