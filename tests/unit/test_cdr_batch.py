"""The CDR envelope of `cdrwatch.cdrs.v1` (schemas.cdr_batch_v1): how publishers group
records into envelopes, and how consumers read envelopes and single records alike."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from schemas.cdr_batch_v1 import (
    MAX_CDRS_PER_MESSAGE,
    CdrBatchV1,
    EnvelopeError,
    cdrs_in_message,
    count_cdrs,
    envelopes,
    input_position,
    message_offset,
    record_in_envelope,
)
from schemas.cdr_v1 import NormalizedCdrV1


def record(n: int, campaign: str = "c1") -> dict[str, object]:
    return {
        "call_id": f"call-{n}",
        "campaign_id": campaign,
        "tenant_id": "t",
        "originated_at": "2026-03-02T09:00:00Z",
        "ended_at": "2026-03-02T09:01:00Z",
        "callee_key": "k" * 16,
        "callee_zones": ["Europe/Rome"],
        "accepted_at": "2026-03-02T09:01:01Z",
    }


def encoded(n: int, campaign: str = "c1") -> tuple[bytes, bytes]:
    return campaign.encode(), orjson.dumps(record(n, campaign))


def test_one_envelope_per_key_in_order_of_first_appearance_records_in_input_order() -> None:
    pairs = [encoded(0, "a"), encoded(1, "b"), encoded(2, "a"), encoded(3, "c"), encoded(4, "b")]
    out = envelopes(pairs)
    assert [key for key, _ in out] == [b"a", b"b", b"c"]
    calls = [[c["call_id"] for c in orjson.loads(value)["cdrs"]] for _, value in out]
    assert calls == [["call-0", "call-2"], ["call-1", "call-4"], ["call-3"]]
    for _, value in out:  # each is a valid CdrBatchV1
        CdrBatchV1.model_validate_json(value)


def test_a_key_takes_more_envelopes_only_past_the_size_or_count_limit() -> None:
    pairs = [encoded(n) for n in range(10, 40)]  # records of one length
    size = len(pairs[0][1]) + 1
    out = envelopes(pairs, max_bytes=10 * size)
    assert [count_cdrs(value) for _, value in out] == [10, 10, 10]
    assert count_cdrs(envelopes(pairs)[0][1]) == 30
    many = envelopes([(b"k", b"1")] * (MAX_CDRS_PER_MESSAGE + 1))
    assert [count_cdrs(value) for _, value in many] == [MAX_CDRS_PER_MESSAGE, 1]
    # A record larger than the limit alone still travels, in an envelope of its own.
    assert [count_cdrs(v) for _, v in envelopes(pairs[:3], max_bytes=5)] == [1, 1, 1]


def test_a_consumer_reads_envelopes_and_single_records_alike() -> None:
    single = orjson.dumps(record(1))
    assert cdrs_in_message(single) == (False, [NormalizedCdrV1.model_validate_json(single)])
    is_envelope, cdrs = cdrs_in_message(envelopes([encoded(1), encoded(2)])[0][1])
    assert is_envelope
    assert [c.call_id for c in cdrs if isinstance(c, NormalizedCdrV1)] == ["call-1", "call-2"]
    assert count_cdrs(single) == 1
    assert count_cdrs(b"not json") == 1


def test_a_bad_record_of_an_envelope_is_judged_alone() -> None:
    value = orjson.dumps({"v": 1, "cdrs": [record(1), {"call_id": "x"}, record(3)]})
    is_envelope, cdrs = cdrs_in_message(value)
    assert is_envelope and len(cdrs) == 3
    assert isinstance(cdrs[0], NormalizedCdrV1) and isinstance(cdrs[2], NormalizedCdrV1)
    assert isinstance(cdrs[1], ValidationError)
    assert record_in_envelope(value, 1) == b'{"call_id":"x"}'
    assert record_in_envelope(value, 5) is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"v": 2, "cdrs": [record(1)]}, "version"),
        ({"v": 1, "cdrs": []}, "1 to"),
        ({"v": 1, "cdrs": "no"}, "1 to"),
        ({"v": 1, "cdrs": [record(1)], "campaign": "x"}, "unknown fields"),
    ],
)
def test_an_envelope_wrong_as_a_whole_is_one_error(value: object, words: str) -> None:
    is_envelope, cdrs = cdrs_in_message(orjson.dumps(value))
    assert is_envelope
    (error,) = cdrs
    assert isinstance(error, EnvelopeError) and words in str(error)


def test_positions_order_messages_and_the_records_inside_them() -> None:
    positions = [input_position(o, i) for o in (4, 5) for i in range(3)]
    assert positions == sorted(positions) and len(set(positions)) == 6
    assert input_position(5, 0) > input_position(4, MAX_CDRS_PER_MESSAGE - 1)
    assert {message_offset(p) for p in positions} == {4, 5}


def test_an_envelope_written_by_another_client_reads_the_same() -> None:
    # Not byte for byte as `envelopes` writes it (spaces, keys in another order).
    loose = (
        b'{ "cdrs": [' + orjson.dumps(record(1)) + b", " + orjson.dumps(record(2)) + b'], "v": 1}'
    )
    assert cdrs_in_message(loose) == cdrs_in_message(envelopes([encoded(1), encoded(2)])[0][1])
