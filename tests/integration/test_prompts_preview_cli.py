"""`synthcorpus prompts preview` on a spec with web samples (real MiniLM embeddings, keyword labels)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import INCLUDE, tiny_spec_dict, write_spec


def test_prompts_preview_prints_rendered_prompts(tmp_path):
    spec = write_spec(tmp_path, tiny_spec_dict(documents=12, **{
        "seeds.web_samples": {"path": str(INCLUDE / "seeds" / "demo_web_samples.jsonl"), "sample_size": 80},
        "topics.labeler": "keywords", "topics.n_clusters": 4,
        "prompts.languages": ["en", "fr"],
    }))
    res = subprocess.run([sys.executable, "-m", "synthcorpus.cli", "prompts", "preview", str(spec), "--n", "5"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    headers = [line for line in res.stdout.splitlines() if line.startswith("=== ")]
    assert len(headers) == 5
    assert any(" fr/" in h for h in headers) and any(" en/" in h for h in headers)
    assert "Écris en français." in res.stdout and "Write in English." in res.stdout
    assert "{{" not in res.stdout
    assert not (tmp_path / "synthcorpus-data").exists()  # preview writes nothing to storage
