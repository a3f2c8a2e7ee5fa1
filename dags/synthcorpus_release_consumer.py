"""Example downstream consumer of synthcorpus releases: a DAG scheduled on the corpus assets.

Each corpus DAG's ``publish`` task emits an event on the asset ``synthcorpus_<corpus>``
(``synthcorpus://<corpus>/latest``) whose ``extra`` carries the release: corpus, run id, version, rows,
files, gate status (``passed`` or ``overridden``), the version URI and its manifest URI. This DAG runs
after any of them, reads ``triggering_asset_events`` and re-hashes every file of each released version
against its manifest before anything downstream (a training job, a mirror) would use it. Copy it as the
start of your own consumer.
"""

from __future__ import annotations

import functools
import operator
import os
from pathlib import Path

import pendulum
from airflow.sdk import Asset, dag, task

from synthcorpus.spec import discover

CORPORA_DIR = Path(os.environ.get("SYNTHCORPUS_CORPORA_DIR") or Path(__file__).resolve().parents[1] / "include" / "corpora")
RELEASE_KEYS = ("corpus", "version", "rows", "gate", "version_uri", "manifest")


@task
def verify_releases(*, triggering_asset_events=None) -> list[dict]:
    """Every triggering release: its manifest's checksums hold and its rows match the event."""
    from synthcorpus.publish import verify_version

    checked = []
    for asset in triggering_asset_events or {}:
        for event in triggering_asset_events[asset]:
            release = event.extra or {}
            missing = [k for k in RELEASE_KEYS if k not in release]
            if missing:
                raise ValueError(f"asset {asset.name}: event {event.id} has no release {', '.join(missing)} in its extra")
            manifest = verify_version(release["version_uri"])  # raises on any checksum mismatch
            if manifest["rows"] != release["rows"] or manifest["version"] != release["version"]:
                raise ValueError(f"{release['manifest']}: version {manifest['version']} with {manifest['rows']} rows, "
                                 f"but the event announced {release['version']} with {release['rows']}")
            print(f"verified {release['corpus']} {release['version']}: {manifest['rows']} rows in "
                  f"{len(manifest['files'])} file(s), gate {release['gate']}, sha256 of every file matches")
            checked.append({"corpus": release["corpus"], "version": release["version"], "rows": manifest["rows"],
                            "files": len(manifest["files"]), "gate": release["gate"]})
    if not checked:
        raise ValueError("expected at least one triggering synthcorpus release event, found none")
    return checked


_assets = [Asset(name=s.asset_name, uri=s.asset_uri) for s in discover(CORPORA_DIR)[0]]
if _assets:

    @dag(
        dag_id="synthcorpus_release_consumer",
        description="Example consumer: verifies each new synthcorpus release against its manifest",
        schedule=functools.reduce(operator.or_, _assets),  # any corpus's release
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["synthcorpus", "consumer"],
        doc_md=__doc__,
    )
    def synthcorpus_release_consumer():
        verify_releases()

    synthcorpus_release_consumer()
