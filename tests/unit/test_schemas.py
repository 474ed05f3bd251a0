"""Wire schemas: committed JSON Schema files match the models; golden examples behave.

Invalid examples carry their expectation in a top-level `_expect` key
(`{"field": ..., "message_contains": ...}`), stripped before validation. Posted as is,
an invalid example fails the same way (the key is an unknown field, dropped). Examples are
checked as ingest checks them: `parse_cdr`, then the normaliser (fixed clock, test key).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.cdr_v1 import FieldError, parse_cdr
from schemas.generate import JSON_DIR, MODELS, drifted, expected_files, render
from services.ingest.normalize import Normalizer

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))
CLOCK = datetime(2026, 6, 1, tzinfo=UTC)


def validate(data: object) -> list[FieldError]:
    cdr, errors = parse_cdr(data)
    if cdr is None:
        return errors
    normalizer = Normalizer(b"unit-test-pseudonym-key", lambda: CLOCK, timedelta(hours=1))
    _, errors = normalizer.normalize(cdr)
    return errors


def test_committed_json_schemas_match_the_models() -> None:
    assert drifted() == [], "run: python -m schemas.generate"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_is_rendered_deterministically_with_sorted_keys(name: str) -> None:
    text = render(MODELS[name])
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert (JSON_DIR / f"{name}.schema.json") in expected_files()


def test_cdr_schema_accepts_unknown_fields_and_epoch_milliseconds() -> None:
    schema = json.loads((JSON_DIR / "cdr_v1.schema.json").read_text())
    assert schema["additionalProperties"] is True
    kinds = {option["type"] for option in schema["properties"]["originated_at"]["anyOf"]}
    assert kinds == {"string", "integer"}
    assert set(schema["required"]) == {
        "call_id",
        "campaign_id",
        "callee_number",
        "originated_at",
        "ended_at",
    }


def test_there_are_examples() -> None:
    assert len(VALID) >= 6
    assert len(INVALID) >= 8


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_example_is_accepted(path: Path) -> None:
    assert validate(json.loads(path.read_text())) == []


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_example_is_rejected_naming_the_field(path: Path) -> None:
    data = json.loads(path.read_text())
    expect = data.pop("_expect")
    errors = validate(data)
    assert errors, "expected a rejection"
    matching = [e for e in errors if e.field == expect["field"]]
    assert matching, f"no error on {expect['field']}: {errors}"
    assert any(expect["message_contains"] in e.message for e in matching), matching


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_a_normalised_record_is_what_model_construct_would_make(path: Path) -> None:
    """The normaliser builds its record with `trusted_model`, which must equal
    `NormalizedCdrV1.model_construct` of the same values: fields, fields set, dump, JSON."""
    from schemas.cdr_v1 import NormalizedCdrV1
    from services.ingest.service import encode_record

    cdr, errors = parse_cdr(json.loads(path.read_text()))
    assert cdr is not None, errors
    normalizer = Normalizer(b"unit-test-pseudonym-key", lambda: CLOCK, timedelta(hours=1))
    record, errors = normalizer.normalize(cdr, tenant_id="acme")
    assert record is not None, errors
    values = dict(record.__dict__)
    constructed = NormalizedCdrV1.model_construct(**values)
    assert record == constructed
    assert record.model_fields_set == constructed.model_fields_set
    assert record.model_dump() == constructed.model_dump()
    assert encode_record(record) == encode_record(constructed)
    assert record.tenant_id == "acme"
    assert NormalizedCdrV1.model_validate(record.model_dump()) == record


def test_trusted_model_falls_back_to_model_construct_for_partial_values() -> None:
    from schemas.cdr_v1 import FieldError as Error
    from schemas.cdr_v1 import trusted_model

    assert trusted_model(Error, {"message": "m", "field": "f"}) == Error(field="f", message="m")
    partial = trusted_model(Error, {"field": "f"})
    assert partial.model_fields_set == {"field"}


def test_cdr_instants_in_text_are_parsed_the_same_each_time_and_errors_are_not_cached() -> None:
    from schemas.instants import parse_cdr_instant

    first = parse_cdr_instant("2026-03-02T10:15:00.123456789+01:00")
    assert first == datetime(2026, 3, 2, 9, 15, 0, 123456, tzinfo=UTC)
    assert parse_cdr_instant("2026-03-02T10:15:00.123456789+01:00") == first
    for _ in range(2):
        with pytest.raises(ValueError, match="before 2000-01-01"):
            parse_cdr_instant("1999-12-31T23:59:59Z")
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_cdr_instant("2026-03-02 10:15")
