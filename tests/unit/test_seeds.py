from __future__ import annotations

import pytest

from synthcorpus.seeds import SeedError, read_outline
from tests.conftest import INCLUDE


def test_demo_outline_reads_into_units():
    rows = read_outline(INCLUDE / "seeds" / "demo_outline.yaml")
    assert len(rows) >= 9
    assert len({r["subject"] for r in rows}) >= 3
    assert len({r["seed_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize(
    "text,message",
    [
        ("subjects: []\n", "subjects: expected a non-empty list"),
        ("- just a list\n", "subjects: expected a non-empty list"),
        ("subjects:\n  - subject: Bio\n    course: Eco\n", r"subjects\[0\].units: expected a non-empty list"),
        ("subjects:\n  - subject: Bio\n    course: Eco\n    units:\n      - title: ''\n        description: d\n",
         r"subjects\[0\].units\[0\].title: expected a non-empty string"),
        ("subjects:\n  - subject: Bio\n    units: [{title: a, description: b}]\n", r"subjects\[0\].course: expected a non-empty string"),
        ("subjects: [\n", "expected valid YAML"),
    ],
)
def test_malformed_outline_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "outline.yaml"
    path.write_text(text)
    with pytest.raises(SeedError, match=message) as info:
        read_outline(path)
    assert str(path) in str(info.value)
