"""POST /v1/cdrs with hostile records: each is rejected alone before anything is published
(never 500/503), no raw phone number reaches the published record, answers stay short."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from services.ingest import service as ingest_service
from services.ingest.service import encode_record
from tests.service.records import make_cdr

if TYPE_CHECKING:
    from tests.service.conftest import IngestHarness

Harness = Callable[..., contextlib.AbstractAsyncContextManager["IngestHarness"]]
DIALER_NUMBER_FIELDS = ("dst", "destination_number", "phone_number", "dnis")
# Other numbers than the callee's, in the forms dialers write them.
LEAKS = {
    "dst": "+44 20 7946 0018",
    "destination_number": "0044-20-7946-0019",
    "phone_number": "(212) 736-5000",
    "dnis": "+393471234599",
}


async def post(harness: IngestHarness, body: Any, **headers: str) -> Any:
    auth = await harness.token("ingest")
    if isinstance(body, bytes):
        return await harness.client.post(
            "/v1/cdrs",
            content=body,
            headers={**auth, "Content-Type": "application/json", **headers},
        )
    return await harness.client.post("/v1/cdrs", json=body, headers=auth)


def published_bytes(harness: IngestHarness) -> bytes:
    return b"\n".join(encode_record(record)[1] for record in harness.publisher.records)


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def assert_no_raw_number(wire: bytes, raw: str) -> None:
    digits = digits_of(raw).removeprefix("00")
    assert digits.encode() not in wire
    assert digits[-9:].encode() not in wire  # national significant part
    assert raw.encode() not in wire


# --- privacy ------------------------------------------------------------------------------


async def test_numbers_in_unknown_dialer_fields_are_never_published(
    ingest: IngestHarness,
) -> None:
    response = await post(ingest, [make_cdr("a", **LEAKS)])

    assert response.status_code == 202
    wire = published_bytes(ingest)
    for name, raw in LEAKS.items():
        assert name.encode() not in wire
        assert_no_raw_number(wire, raw)
    assert ingest.publisher.records[0].extra == {}


async def test_allowed_fields_and_explicit_extra_carry_pseudonyms_not_numbers(
    ingest_harness: Harness,
) -> None:
    allowed = ",".join((*DIALER_NUMBER_FIELDS, "lead_list"))
    async with ingest_harness(extra_fields_allowed=allowed) as harness:
        record = make_cdr(
            "a",
            **LEAKS,
            lead_list="spring-2026",
            extra={"notes": {"callback": "sip:+39 06 4567 8901@pbx"}},
        )

        response = await post(harness, [record])

        assert response.status_code == 202
        [published] = harness.publisher.records
        wire = published_bytes(harness)
        for raw in (*LEAKS.values(), "+39 06 4567 8901"):
            assert_no_raw_number(wire, raw)
        assert published.extra["lead_list"] == "spring-2026"
        for name in DIALER_NUMBER_FIELDS:
            assert re.fullmatch(r"pseudonym:[0-9a-f]{32}", published.extra[name])
        assert published.extra["notes"]["callback"].startswith("pseudonym:")


async def test_the_callees_own_number_under_another_name_gets_its_callee_key(
    ingest_harness: Harness,
) -> None:
    async with ingest_harness(extra_fields_allowed="dnis") as harness:
        await post(harness, [make_cdr("a", dnis="0039 347 123 4567")])

        [published] = harness.publisher.records
        assert published.extra == {"dnis": f"pseudonym:{published.callee_key}"}


# --- nothing half-accepted ----------------------------------------------------------------


async def test_deep_nesting_in_an_unknown_field_is_dropped_and_the_batch_accepted(
    ingest: IngestHarness,
) -> None:
    batch = [make_cdr("a"), make_cdr("b", vendor=nested(300)), make_cdr("c")]

    response = await post(ingest, batch)

    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert b"vendor" not in published_bytes(ingest)


async def test_deep_nesting_kept_by_the_allow_list_is_rejected_alone(
    ingest_harness: Harness,
) -> None:
    async with ingest_harness(extra_fields_allowed="vendor") as harness:
        batch = [
            make_cdr("a"),
            make_cdr("b", vendor=nested(300)),
            make_cdr("c", extra={"x": nested(300)}),
            make_cdr("d"),
        ]

        response = await post(harness, batch)

        assert response.status_code == 202
        result = response.json()
        assert result["accepted"] == 2
        assert [(r["index"], r["errors"][0]["field"]) for r in result["rejected"]] == [
            (1, "vendor"),
            (2, "extra"),
        ]
        assert [r.call_id for r in harness.publisher.records] == ["a", "d"]


async def test_a_two_megabyte_field_is_rejected_alone_never_503(ingest_harness: Harness) -> None:
    big = "9" * 2_000_000
    async with ingest_harness(max_body_bytes=16 * 1024 * 1024, extra_fields_allowed="blob") as h:
        batch = [
            make_cdr("a"),
            make_cdr("b", disposition=big),
            make_cdr("c", blob=big),
            make_cdr("d", extra={"blob": big}),
            make_cdr("e", unlisted=big),
        ]

        response = await post(h, batch)

        assert response.status_code == 202
        result = response.json()
        assert result["accepted"] == 2
        assert [(r["index"], r["errors"][0]["field"]) for r in result["rejected"]] == [
            (1, "disposition"),
            (2, "extra"),
            (3, "extra"),
        ]
        assert [r.call_id for r in h.publisher.records] == ["a", "e"]
        assert len(response.content) < 2_000


async def test_a_record_larger_than_the_publish_limit_is_rejected_alone(
    ingest_harness: Harness,
) -> None:
    async with ingest_harness(max_record_bytes=4096) as harness:
        filler = {f"k{i}": "v" * 90 for i in range(36)}  # < 4 KiB of extra, > 4 KiB of record
        response = await post(harness, [make_cdr("a"), make_cdr("b", extra=filler)])

        assert response.status_code == 202
        [rejected] = response.json()["rejected"]
        assert rejected["index"] == 1
        assert rejected["errors"] == [
            {"field": "(record)", "message": "record larger than 4096 bytes once normalised"}
        ]
        assert [r.call_id for r in harness.publisher.records] == ["a"]


async def test_only_bad_records_is_422_and_publishes_nothing(ingest: IngestHarness) -> None:
    response = await post(ingest, [make_cdr("a", campaign_id="a/b"), make_cdr("b", extra=[1])])

    assert response.status_code == 422
    assert ingest.publisher.batches == []


async def test_a_body_nesting_beyond_the_parser_is_400_with_a_clear_message(
    ingest: IngestHarness,
) -> None:
    body = b"[" * 2000 + b"]" * 2000

    response = await post(ingest, body)

    assert response.status_code == 400
    assert response.json()["detail"] == "body nests objects or arrays deeper than 1024 levels"


async def test_an_ndjson_line_nesting_beyond_the_parser_is_its_records_error(
    ingest: IngestHarness,
) -> None:
    body = orjson.dumps(make_cdr("a")) + b"\n" + b"[" * 2000 + b"]" * 2000 + b"\n"

    response = await post(ingest, body, **{"Content-Type": "application/x-ndjson"})

    assert response.status_code == 202
    [rejected] = response.json()["rejected"]
    assert (
        rejected["errors"][0]["message"] == "line 2 nests objects or arrays deeper than 1024 levels"
    )


async def test_a_record_whose_check_raises_is_rejected_alone(
    ingest: IngestHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body's validation at once raises (it holds the record), then the record's own
    (`parse_cdrs` of it alone)."""
    real_parse_body = ingest_service.parse_cdrs

    def parse_body_or_overflow(items: list[Any], **kwargs: Any) -> Any:
        if any(isinstance(item, dict) and item.get("call_id") == "poison" for item in items):
            raise OverflowError("date value out of range")
        return real_parse_body(items, **kwargs)

    monkeypatch.setattr(ingest_service, "parse_cdrs", parse_body_or_overflow)

    response = await post(ingest, [make_cdr("a"), make_cdr("poison"), make_cdr("c")])

    assert response.status_code == 202
    assert response.json()["rejected"] == [
        {
            "index": 1,
            "call_id": "poison",
            "errors": [
                {"field": "(record)", "message": "record could not be processed (OverflowError)"}
            ],
        }
    ]
    assert [r.call_id for r in ingest.publisher.records] == ["a", "c"]


# --- instants and ids ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"originated_at": "0001-01-01T00:30:00+01:00"},
            "originated_at",
            "timestamp before 2000-01-01T00:00:00Z",
        ),
        (
            {"ended_at": "9999-12-31T23:30:00-01:00"},
            "ended_at",
            "timestamp out of range: its UTC instant is before year 1 or after year 9999",
        ),
        (
            {"originated_at": 1772443500},
            "originated_at",
            "epoch value before 2000-01-01 as milliseconds; it looks like epoch seconds; "
            "send milliseconds",
        ),
        ({"campaign_id": "camp\x1b[2J"}, "campaign_id", "printable"),
        ({"campaign_id": "acme/camp"}, "campaign_id", "campaign_id must not contain '/'"),
        ({"agent_id": "x" * 129}, "agent_id", "String should have at most 128 characters"),
    ],
)
async def test_out_of_range_values_are_field_errors_of_their_record(
    ingest: IngestHarness, changes: dict[str, Any], field: str, message: str
) -> None:
    response = await post(ingest, [make_cdr("good"), make_cdr("bad", **changes)])

    assert response.status_code == 202
    [rejected] = response.json()["rejected"]
    assert rejected["call_id"] == "bad"
    assert rejected["errors"][0]["field"] == field
    assert message in rejected["errors"][0]["message"]
    assert [r.call_id for r in ingest.publisher.records] == ["good"]


async def test_422_bodies_echo_only_a_short_excerpt(ingest_harness: Harness) -> None:
    long = "\u00e9" * 100_000
    fields = ["call_id", "campaign_id", "tenant_id", "callee_number", "callee_tz", "dial_mode"]
    async with ingest_harness(max_body_bytes=4 * 1024 * 1024) as harness:
        response = await post(harness, [make_cdr(**dict.fromkeys(fields, long))])

        assert response.status_code == 422
        assert len(response.content) < 2_000
        assert response.json()["rejected"][0]["call_id"] == long[:128]
