"""latest.json's compare-and-swap on real S3 (SeaweedFS): conditional PUTs (If-Match / If-None-Match)
enforced under concurrent writers, and two runs of one corpus publishing at once."""

from __future__ import annotations

import uuid

import pytest

from synthcorpus import storage
from tests.conftest import tiny_spec_dict, write_spec
from tests.integration.test_s3_storage import bucket  # noqa: F401  (the fixture: a fresh bucket, storage on it)
from tests.unit.test_latest_cas import (check_one_creator_per_file, check_one_winner_per_round, check_race,
                                        counter_worker, create_worker, race_processes, race_two_publishes)

ROUNDS = 20


def test_s3_conditional_write_semantics(bucket):  # noqa: F811
    uri = f"s3://{bucket}/cas/p.json"
    assert storage.read_with_token(uri) == (None, None)
    assert storage.write_if(uri, b"one", None)  # If-None-Match: *
    assert not storage.write_if(uri, b"two", None)
    data, etag = storage.read_with_token(uri)
    assert data == b"one" and etag
    assert storage.write_if(uri, b"two", etag)  # If-Match: the ETag read
    assert not storage.write_if(uri, b"three", etag)  # a stale ETag: someone wrote since
    assert storage.read_bytes(uri) == b"two"
    again, etag2 = storage.read_with_token(uri)
    assert again == b"two" and etag2 != etag
    missing = f"s3://missing-{uuid.uuid4().hex[:8]}/p.json"
    with pytest.raises(storage.StorageError, match=f"{missing}: conditional write failed"):
        storage.write_if(missing, b"x", None)  # not a failed precondition: an error naming the URI


def test_s3_if_match_has_exactly_one_winner_per_round_under_concurrent_processes(bucket):  # noqa: F811
    uri = f"s3://{bucket}/cas/latest.json"
    check_one_winner_per_round(uri, race_processes(counter_worker, uri, rounds=ROUNDS), ROUNDS)


def test_s3_if_none_match_has_exactly_one_creator_under_concurrent_processes(bucket):  # noqa: F811
    # seaweedfs issue #8800 (v4.16): If-None-Match was not enforced under concurrent PUTs.
    prefix = f"s3://{bucket}/cas/created"
    check_one_creator_per_file(prefix, race_processes(create_worker, prefix, rounds=ROUNDS), ROUNDS)


def test_two_runs_publishing_at_once_on_s3(bucket, tmp_path, monkeypatch):  # noqa: F811
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=8)))
    check_race(spec_path, race_two_publishes(spec_path, monkeypatch))
