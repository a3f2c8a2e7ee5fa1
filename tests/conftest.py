from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "include"

# Tests never reach a hub or telemetry endpoint.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def tiny_spec_dict(**overrides) -> dict:
    """A small valid spec with absolute paths to the shipped seeds and templates."""
    spec = {
        "name": "tiny",
        "description": "tiny test corpus",
        "documents": 9,
        "seeds": {"outline": str(INCLUDE / "seeds" / "demo_outline.yaml")},
        "prompts": {
            "formats": ["textbook", "blog_post", "story"],
            "audiences": ["young_children", "high_school_students", "college_students"],
            "languages": ["en"],
            "template_dir": str(INCLUDE / "prompts"),
            "seed": 3,
        },
        "generation": {"engine": "llamacpp", "max_tokens": 48, "temperature": 0.5, "seed": 1, "shard_size": 4},
        "quality": {"min_words": 5, "max_words": 2000, "drop_truncated": False, "min_documents": 1, "max_filtered_share": 0.9},
        # One prompt per document (the fake engine's documents all pass): tests that count engine calls stay
        # exact; the refresh tests set their own yield.
        "refresh": {"expected_yield": 1.0},
    }
    for dotted, value in overrides.items():
        node = spec
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return spec


def write_spec(directory: Path, data: dict, filename: str | None = None) -> Path:
    path = directory / (filename or f"{data.get('name', 'spec')}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def storage_uri(tmp_path, monkeypatch) -> str:
    uri = (tmp_path / "storage").as_uri()
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", uri)
    return uri


@pytest.fixture
def copy_include(tmp_path) -> Path:
    dst = tmp_path / "include"
    shutil.copytree(INCLUDE, dst)
    return dst
