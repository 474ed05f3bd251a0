"""The CDR v1 field reference (schemas/cdr_v1_fields.py) covers exactly CdrV1's fields,
and docs/cdr-v1.md is what it generates (`python -m schemas.cdr_v1_fields --write`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.cdr_v1 import CdrV1
from schemas.cdr_v1_fields import CDR_FIELDS, DOC_PATH, documented_cdr_schema, render_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_every_cdr_field_has_an_entry_and_every_entry_a_field():
    assert set(CDR_FIELDS) == set(CdrV1.model_fields)


def test_docs_cdr_v1_md_is_the_generated_reference():
    assert DOC_PATH == ROOT / "docs" / "cdr-v1.md"
    assert DOC_PATH.read_text(encoding="utf-8") == render_markdown(), (
        "docs/cdr-v1.md is stale: run .venv/bin/python -m schemas.cdr_v1_fields --write"
    )


@pytest.mark.parametrize("field", sorted(CdrV1.model_fields))
def test_every_field_is_in_the_reference_with_its_type_rules_and_example(field):
    text = DOC_PATH.read_text(encoding="utf-8")
    [row] = [line for line in text.splitlines() if line.startswith(f"| `{field}` |")]
    doc = CDR_FIELDS[field]
    assert doc.kind.replace("|", "\\\\|") in row and doc.rules.replace("|", "\\\\|") in row
    prop = documented_cdr_schema()["properties"][field]
    assert doc.meaning in prop["description"] and doc.rules in prop["description"]
    assert prop["examples"] == [doc.example]


def test_the_examples_make_a_valid_record():
    record = {name: doc.example for name, doc in CDR_FIELDS.items()}
    CdrV1.model_validate(record)


def test_the_readme_links_the_field_reference():
    assert "(docs/cdr-v1.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
