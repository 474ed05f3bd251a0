"""CDR batch v1: the envelope of cdrwatch.cdrs.v1 (issue 7 item 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas.cdr_batch_v1 import (
    MAX_CDRS_PER_MESSAGE,
    CdrBatchV1,
    cdrs_in_message,
    count_cdrs,
    encode_batch,
    input_position,
    message_offset,
    split_batches,
)
from schemas.cdr_v1 import NormalizedCdrV1
from schemas.generate import JSON_DIR
from services.ingest.service import batch_encoded, encode_batches, encode_record

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def normalized(n: int, campaign: str = "camp-a", **changes: Any) -> NormalizedCdrV1:
    fields: dict[str, Any] = {
        "call_id": f"call-{n}",
        "campaign_id": campaign,
        "tenant_id": "default",
        "originated_at": T0 + timedelta(seconds=n),
        "ended_at": T0 + timedelta(seconds=n + 60),
        "callee_key": "k" * 32,
        "callee_country": "IT",
        "callee_zones": ("Europe/Rome",),
        "accepted_at": T0 + timedelta(minutes=5),
        **changes,
    }
    return NormalizedCdrV1.model_validate(fields)


def test_an_envelope_round_trips_byte_for_byte_through_the_model() -> None:
    records = [normalized(n) for n in range(3)]
    value = encode_batch("camp-a", [encode_record(r)[1] for r in records])

    batch = CdrBatchV1.model_validate_json(value)

    assert batch.campaign_id == "camp-a"
    assert batch.cdrs == records
    assert orjson.dumps(batch.model_dump(mode="json", by_alias=True)) == value


def test_the_committed_json_schema_describes_the_envelope() -> None:
    schema = json.loads((JSON_DIR / "cdr_batch_v1.schema.json").read_text())
    assert schema["required"] == ["campaign_id", "cdrs"]
    assert schema["additionalProperties"] is False
    cdrs = schema["properties"]["cdrs"]
    assert (cdrs["minItems"], cdrs["maxItems"]) == (1, MAX_CDRS_PER_MESSAGE)
    assert cdrs["items"] == {"$ref": "#/$defs/NormalizedCdrV1"}
    assert "callee_key" in schema["$defs"]["NormalizedCdrV1"]["required"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"campaign_id": "camp-a", "cdrs": []}, id="empty"),
        pytest.param({"cdrs": [1]}, id="no_campaign"),
        pytest.param({"campaign_id": "camp-a", "cdrs": [], "x": 1}, id="unknown_field"),
    ],
)
def test_malformed_envelopes_are_refused(value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CdrBatchV1.model_validate(value)


def test_a_record_of_another_campaign_is_refused_in_an_envelope() -> None:
    with pytest.raises(ValidationError, match="batch's campaign_id"):
        CdrBatchV1(campaign_id="camp-a", cdrs=[normalized(1, campaign="camp-b")])


def test_a_request_is_one_envelope_per_campaign_in_order_of_first_appearance() -> None:
    records = [normalized(0, "b"), normalized(1, "a"), normalized(2, "b"), normalized(3, "a")]

    envelopes = encode_batches(records)

    assert [key for key, _ in envelopes] == [b"b", b"a"]
    batches = [CdrBatchV1.model_validate_json(value) for _, value in envelopes]
    assert [[c.call_id for c in b.cdrs] for b in batches] == [
        ["call-0", "call-2"],
        ["call-1", "call-3"],
    ]
    assert batch_encoded([encode_record(r) for r in records]) == envelopes


def test_envelopes_split_before_their_byte_limit_keeping_order() -> None:
    values = [encode_record(normalized(n))[1] for n in range(10)]
    limit = sum(len(v) + 1 for v in values[:4])  # four records fit, a fifth does not

    envelopes = split_batches("camp-a", values, max_bytes=limit)

    call_ids = [[c.call_id for c in CdrBatchV1.model_validate_json(e).cdrs] for e in envelopes]
    assert call_ids == [[f"call-{n}" for n in r] for r in (range(4), range(4, 8), range(8, 10))]


def test_a_message_of_one_record_and_an_envelope_both_give_their_records() -> None:
    single = encode_record(normalized(7))[1]
    envelope = encode_batch("camp-a", [encode_record(normalized(n))[1] for n in range(3)])

    assert cdrs_in_message(single) == [normalized(7)]
    assert cdrs_in_message(envelope) == [normalized(n) for n in range(3)]


def test_a_bad_record_of_an_envelope_is_an_error_alone() -> None:
    good = [orjson.loads(encode_record(normalized(n))[1]) for n in range(3)]
    good[1]["originated_at"] = "yesterday"
    value = orjson.dumps({"campaign_id": "camp-a", "cdrs": good})

    decoded = cdrs_in_message(value)

    assert decoded[0] == normalized(0) and decoded[2] == normalized(2)
    assert isinstance(decoded[1], ValidationError)


@pytest.mark.parametrize("value", [b"{not json", b"", None, b"[1, 2]", b'{"call_id": "x"}'])
def test_a_message_that_is_no_record_is_one_error(value: bytes | None) -> None:
    [decoded] = cdrs_in_message(value)
    assert isinstance(decoded, ValidationError)


def test_positions_order_the_records_of_a_partition_and_name_their_message() -> None:
    positions = [input_position(o, i) for o in (0, 1, 2) for i in (0, 1, MAX_CDRS_PER_MESSAGE - 1)]
    assert positions == sorted(set(positions))
    assert [message_offset(p) for p in positions] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_a_message_counts_the_cdrs_it_holds() -> None:
    envelope = encode_batch("camp-a", [encode_record(normalized(n))[1] for n in range(4)])
    assert count_cdrs(envelope) == 4
    assert count_cdrs(encode_record(normalized(1))[1]) == 1
    assert count_cdrs(b"not json") == 1
