"""The dataset card's release notes ("Changes", issue 13 part 4): rows added since the previous version,
the gate's metrics against the previous version's, the override, links to both versions' lineage."""

from __future__ import annotations

from synthcorpus import storage
from synthcorpus.layout import RunLayout
from synthcorpus.spec import load_spec
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine


def _card(path, version):
    spec = load_spec(path)
    return storage.read_bytes(RunLayout.of(spec, version).dataset_card).decode()


def test_a_refresh_card_says_what_changed_since_the_previous_version(tmp_path, storage_uri):
    path = write_spec(tmp_path, tiny_spec_dict(documents=6))
    run_pipeline(str(path), "v1", {}, engine=FakeEngine(), until="publish")
    first = _card(path, "v1")
    assert "## Changes" in first and "- First version: 6 rows." in first and "Quality gate: passed" in first
    run_pipeline(str(path), "v2", {}, engine=FakeEngine(), until="publish")
    card = _card(path, "v2")
    notes = card[card.index("## Changes"):]
    assert "**+6 rows** since version `v1` (12 in all)" in notes
    assert "[card](../v1/README.md)" in notes and "[`lineage.json`](../v1/lineage.json)" in notes
    assert "| documents | 6 | 6 | 0 |" in notes  # the gate's metric against v1's, with the change
    assert "| duplicate_rate |" in notes and "| language_match_rate |" in notes


def test_an_overridden_gate_is_in_the_release_notes(tmp_path, storage_uri):
    path = write_spec(tmp_path, tiny_spec_dict(documents=3, **{"quality.min_documents": 50}))
    run_pipeline(str(path), "o1", {"override_gate_reason": "accepted for a smoke test"}, engine=FakeEngine(), until="publish")
    notes = _card(path, "o1").split("## Changes", 1)[1]
    assert 'Quality gate **overridden**: "accepted for a smoke test"' in notes and "failed: " in notes
