"""The near-dedup stage over exact-deduplicated shards: planted near-duplicates removed (kept aside with
the id they duplicate), distinct documents kept, same result however the run is sharded."""

from __future__ import annotations

import random

import pyarrow as pa

from synthcorpus import storage
from synthcorpus.spec import parse_spec
from synthcorpus.stages.contract import RunContext, execute
from tests.conftest import tiny_spec_dict
from tests.stagekit import given_documents

WORDS = ("river forest school garden planet market kitchen engine harbor library music winter sugar stone "
         "window letter bridge castle cloud farmer doctor ocean paper mirror pencil rocket island valley").split()


def docs(n=40, seed=3):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(150)) for _ in range(n)]
    for src, dst in ((0, 5), (7, 30)):  # plant two near-duplicates: a few words changed
        words = texts[src].split()
        for k in (10, 50, 90):
            words[k] = "changed"
        texts[dst] = " ".join(words)
    return [{"prompt_id": f"p{i:03d}", "text": t} for i, t in enumerate(texts)]


def run_stage(storage_uri, run_id, shards):
    run = RunContext.create(parse_spec(tiny_spec_dict()), run_id)
    rows = docs()
    size = -(-len(rows) // shards)
    uris = []
    for s in range(shards):
        uri = run.layout.shard("dedup", s)
        storage.write_parquet(uri, pa.Table.from_pylist(rows[s * size:(s + 1) * size]))
        uris.append(uri)
    given_documents(run, "dedup", uris)  # the plan and the exact-dedup stage's shards
    for s in range(shards):
        execute(run, "minhash_signatures", s)
    result = execute(run, "near_dedup")
    kept = [r["prompt_id"] for u in result["outputs"]["documents"] for r in storage.read_parquet(u).to_pylist()]
    removed = storage.read_parquet(run.layout.removed("near_dedup")).to_pylist()
    return result, kept, removed


def test_near_duplicates_removed_and_independent_of_sharding(storage_uri):
    one, kept1, removed1 = run_stage(storage_uri, "one", 1)
    eight, kept8, removed8 = run_stage(storage_uri, "eight", 8)
    assert sorted((r["prompt_id"], r["duplicate_of"]) for r in removed1) == [("p005", "p000"), ("p030", "p007")]
    assert kept1 == kept8 and len(kept1) == 38
    assert sorted(r["prompt_id"] for r in removed8) == ["p005", "p030"]
    assert one["stats"]["removed"] == 2 and one["stats"]["duplicate_rate"] == 0.05
