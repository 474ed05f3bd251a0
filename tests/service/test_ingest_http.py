"""POST /v1/cdrs in process: bodies, per-record errors, limits, auth, broker failure."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from schemas.cdr_v1 import NormalizedCdrV1
from tests.service.records import make_cdr

if TYPE_CHECKING:
    from tests.service.conftest import IngestHarness


def ndjson(*records: Any) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


async def post(
    harness: IngestHarness, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    auth = await harness.token("ingest")
    if isinstance(body, bytes):
        content_type = {"Content-Type": "application/json"}
        return await harness.client.post(
            "/v1/cdrs", content=body, headers={**auth, **content_type, **(headers or {})}
        )
    return await harness.client.post("/v1/cdrs", json=body, headers={**auth, **(headers or {})})


# --- bodies -------------------------------------------------------------------------------


async def test_json_array_is_accepted_and_published(ingest: IngestHarness) -> None:
    response = await post(ingest, [make_cdr("a"), make_cdr("b")])

    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert [r.call_id for r in ingest.publisher.records] == ["a", "b"]


async def test_single_object_is_accepted(ingest: IngestHarness) -> None:
    response = await post(ingest, make_cdr("solo"))

    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert ingest.publisher.records[0].call_id == "solo"


async def test_ndjson_body_skips_blank_lines(ingest: IngestHarness) -> None:
    body = b"\n" + ndjson(make_cdr("a")) + b"\r\n  \n" + ndjson(make_cdr("b"))

    response = await post(ingest, body, {"Content-Type": "application/x-ndjson"})

    assert response.status_code == 202
    assert response.json()["accepted"] == 2


async def test_ndjson_line_that_is_not_json_is_an_error_of_that_record(
    ingest: IngestHarness,
) -> None:
    body = ndjson(make_cdr("a")) + b'{"call_id": "broken", \n' + ndjson(make_cdr("c"))

    response = await post(ingest, body, {"Content-Type": "application/x-ndjson; charset=utf-8"})

    assert response.status_code == 202
    result = response.json()
    assert result["accepted"] == 2
    [rejected] = result["rejected"]
    assert rejected["index"] == 1
    assert rejected["call_id"] is None
    assert rejected["errors"][0]["field"] == "(record)"
    assert "line 2 is not valid JSON" in rejected["errors"][0]["message"]


# --- per-record errors --------------------------------------------------------------------

BAD_RECORDS = [
    pytest.param(
        make_cdr(
            "bad", ended_at="2026-03-02T10:14:00+01:00", answered_at=None, agent_connected_at=None
        ),
        "ended_at",
        "ended_at before originated_at",
        id="ended_before_originated",
    ),
    pytest.param(
        make_cdr("bad", campaign_id=None),
        "campaign_id",
        "field required",
        id="missing_campaign_id",
    ),
    pytest.param(
        make_cdr("bad", originated_at="2026-03-02T10:15:00"),
        "originated_at",
        "offset",
        id="timestamp_without_offset",
    ),
    pytest.param(
        make_cdr("bad", callee_number="+39 12"),
        "callee_number",
        "callee_number",
        id="bad_callee_number",
    ),
    pytest.param(
        make_cdr(
            "bad",
            answered_at=None,
            agent_connected_at=None,
            greeting_ended_at="2026-03-02T10:15:12+01:00",
        ),
        "greeting_ended_at",
        "answered_at missing",
        id="greeting_without_answer",
    ),
    pytest.param(
        make_cdr("bad", amd_result="fax"),
        "amd_result",
        "'machine'",
        id="unknown_amd_result",
    ),
]


@pytest.mark.parametrize(("bad", "field", "reason"), BAD_RECORDS)
async def test_mixed_batch_accepts_the_good_and_names_the_bad(
    ingest: IngestHarness, bad: dict[str, Any], field: str, reason: str
) -> None:
    response = await post(ingest, [make_cdr("good-1"), bad, make_cdr("good-2")])

    assert response.status_code == 202
    result = response.json()
    assert result["accepted"] == 2
    [rejected] = result["rejected"]
    assert rejected["index"] == 1
    assert rejected["call_id"] == "bad"
    assert any(e["field"] == field and reason in e["message"] for e in rejected["errors"]), rejected
    assert [r.call_id for r in ingest.publisher.records] == ["good-1", "good-2"]
    assert ingest.metric("cdrwatch_cdrs_rejected_total", reason="invalid") == 1


async def test_all_bad_batch_is_422_with_the_same_shape_and_nothing_published(
    ingest: IngestHarness,
) -> None:
    response = await post(
        ingest, [make_cdr("x", amd_result="fax"), "not an object", make_cdr(None)]
    )

    assert response.status_code == 422
    result = response.json()
    assert result["accepted"] == 0
    assert result["duplicates"] == 0
    assert [(r["index"], r["call_id"]) for r in result["rejected"]] == [
        (0, "x"),
        (1, None),
        (2, None),
    ]
    assert result["rejected"][1]["errors"] == [
        {"field": "(record)", "message": "record must be a JSON object"}
    ]
    assert ingest.publisher.batches == []


# --- whole-body errors --------------------------------------------------------------------


async def test_more_records_than_the_limit_is_413(ingest: IngestHarness) -> None:
    response = await post(ingest, [make_cdr(f"c{i}") for i in range(21)])

    assert response.status_code == 413
    assert "more than 20 records" in response.json()["detail"]
    assert ingest.publisher.batches == []


async def test_more_ndjson_records_than_the_limit_is_413(ingest: IngestHarness) -> None:
    body = ndjson(*[{"call_id": str(i)} for i in range(21)])

    response = await post(ingest, body, {"Content-Type": "application/x-ndjson"})

    assert response.status_code == 413


async def test_body_over_the_byte_limit_is_413(ingest: IngestHarness) -> None:
    body = orjson.dumps([make_cdr("big", notes="x" * 1000) for _ in range(19)])
    assert len(body) > ingest.settings.max_body_bytes

    response = await post(ingest, body)

    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


async def test_streamed_body_over_the_limit_is_413_without_content_length(
    ingest: IngestHarness,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = await ingest.client.post(
        "/v1/cdrs",
        content=chunks(),
        headers={**await ingest.token(), "Content-Type": "application/json"},
    )

    assert response.status_code == 413


async def test_declared_content_length_over_the_limit_is_refused_before_reading(
    ingest: IngestHarness,
) -> None:
    consumed = []

    async def chunks() -> AsyncIterator[bytes]:
        consumed.append(1)
        yield b"[]"

    response = await ingest.client.post(
        "/v1/cdrs",
        content=chunks(),
        headers={
            **await ingest.token(),
            "Content-Type": "application/json",
            "Content-Length": str(10 * 1024 * 1024),
        },
    )

    assert response.status_code == 413
    assert consumed == []


async def test_malformed_json_is_400(ingest: IngestHarness) -> None:
    response = await post(ingest, b'[{"call_id": "a",')

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


@pytest.mark.parametrize(
    "body", [b"", b"[]", b"42", b'"text"'], ids=["empty", "empty_array", "number", "string"]
)
async def test_body_without_records_is_400(ingest: IngestHarness, body: bytes) -> None:
    response = await post(ingest, body)

    assert response.status_code == 400


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_unsupported_content_type_is_415(ingest: IngestHarness, content_type: str) -> None:
    response = await post(ingest, orjson.dumps(make_cdr()), {"Content-Type": content_type})

    assert response.status_code == 415
    assert "application/x-ndjson" in response.json()["detail"]


async def test_compressed_body_is_415(ingest: IngestHarness) -> None:
    response = await post(ingest, orjson.dumps(make_cdr()), {"Content-Encoding": "gzip"})

    assert response.status_code == 415


# --- broker -------------------------------------------------------------------------------


async def test_broker_down_is_503_with_retry_after_and_nothing_accepted(
    ingest: IngestHarness,
) -> None:
    ingest.publisher.fail = True

    response = await post(ingest, [make_cdr("a"), make_cdr("b")])

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "accepted" not in response.json()
    assert ingest.publisher.batches == []
    assert ingest.metric("cdrwatch_cdrs_rejected_total", reason="publish_failed") == 2


async def test_all_bad_batch_does_not_need_the_broker(ingest: IngestHarness) -> None:
    ingest.publisher.fail = True

    response = await post(ingest, [make_cdr("a", amd_result="fax")])

    assert response.status_code == 422


# --- duplicates ---------------------------------------------------------------------------


async def test_duplicates_inside_a_request_are_counted_once(ingest: IngestHarness) -> None:
    response = await post(ingest, [make_cdr("a"), make_cdr("b"), make_cdr("a"), make_cdr("a")])

    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "duplicates": 2, "rejected": []}
    assert [r.call_id for r in ingest.publisher.records] == ["a", "b"]


async def test_a_bad_first_copy_does_not_shadow_a_good_later_one(ingest: IngestHarness) -> None:
    response = await post(ingest, [make_cdr("a", amd_result="fax"), make_cdr("a")])

    assert response.json()["accepted"] == 1
    assert response.json()["duplicates"] == 0
    assert [r["index"] for r in response.json()["rejected"]] == [0]


async def test_same_call_id_of_different_tenants_is_not_a_duplicate(ingest: IngestHarness) -> None:
    first = await ingest.client.post(
        "/v1/cdrs", json=[make_cdr("a")], headers=await ingest.token("ingest", tenant="t1")
    )
    second = await ingest.client.post(
        "/v1/cdrs", json=[make_cdr("a")], headers=await ingest.token("ingest", tenant="t2")
    )

    assert first.json() == second.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert [(r.tenant_id, r.call_id) for r in ingest.publisher.records] == [
        ("t1", "a"),
        ("t2", "a"),
    ]


async def test_the_same_batch_posted_twice_is_published_twice(ingest: IngestHarness) -> None:
    """Dedup across requests is the detector's job (SPEC "Duplicates")."""
    batch = [make_cdr("a"), make_cdr("b")]

    first = await post(ingest, batch)
    second = await post(ingest, batch)

    assert first.json() == second.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert len(ingest.publisher.records) == 4


# --- what is published --------------------------------------------------------------------


async def test_published_record_is_normalised_and_carries_no_raw_number(
    ingest: IngestHarness,
) -> None:
    await post(
        ingest,
        [make_cdr("a", callee_number="+39 347 123 4567", extra={"vendor_lead": "L-1"})],
    )

    [record] = ingest.publisher.records
    wire = orjson.dumps(record.model_dump(mode="json", by_alias=True)).decode()
    for form in ("3471234567", "347 123 4567", "+393471234567"):
        assert form not in wire
    assert "callee_number" not in wire
    assert len(record.callee_key) == 32
    assert record.callee_country == "IT"
    assert record.originated_at.isoformat() == "2026-03-02T09:15:00+00:00"
    assert record.accepted_at == ingest.clock.now
    assert record.source == "http"
    assert record.extra == {"vendor_lead": "L-1"}
    assert NormalizedCdrV1.model_validate_json(wire) == record


async def test_same_number_in_any_form_gets_the_same_callee_key(ingest: IngestHarness) -> None:
    await post(
        ingest,
        [
            make_cdr("a", callee_number="+393471234567"),
            make_cdr("b", callee_number="0039 347 123 4567"),
            make_cdr("c", callee_number="347-123-4567", callee_country="IT"),
        ],
    )

    keys = {record.callee_key for record in ingest.publisher.records}
    assert len(keys) == 1


async def test_callee_number_error_does_not_echo_the_number(ingest: IngestHarness) -> None:
    response = await post(ingest, [make_cdr("a", callee_number="+39 0000 1")])

    assert response.status_code == 422
    assert "0000" not in response.text


async def test_originated_more_than_an_hour_ahead_of_the_clock_is_rejected(
    ingest: IngestHarness,
) -> None:
    from datetime import timedelta

    now = ingest.clock.now
    just_in = (now + timedelta(hours=1)).isoformat()
    too_far = (now + timedelta(hours=1, seconds=1)).isoformat()

    response = await post(
        ingest,
        [
            make_cdr(
                "in",
                originated_at=just_in,
                answered_at=None,
                agent_connected_at=None,
                ended_at=just_in,
            ),
            make_cdr(
                "out",
                originated_at=too_far,
                answered_at=None,
                agent_connected_at=None,
                ended_at=too_far,
            ),
        ],
    )

    assert response.status_code == 202
    [rejected] = response.json()["rejected"]
    assert rejected["call_id"] == "out"
    assert rejected["errors"] == [
        {
            "field": "originated_at",
            "message": "originated_at more than 1h in the future of the ingest clock",
        },
        {
            "field": "ended_at",
            "message": "ended_at more than 1h in the future of the ingest clock",
        },
    ]
    assert ingest.metric("cdrwatch_cdrs_rejected_total", reason="too_far_future") == 1


# --- auth and tenants ---------------------------------------------------------------------


async def test_no_token_is_401(ingest: IngestHarness) -> None:
    response = await ingest.client.post("/v1/cdrs", json=[make_cdr()])

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert ingest.publisher.batches == []


async def test_wrong_token_is_401(ingest: IngestHarness) -> None:
    response = await ingest.client.post(
        "/v1/cdrs", json=[make_cdr()], headers={"Authorization": "Bearer cdrw_not-a-token"}
    )

    assert response.status_code == 401


async def test_viewer_token_is_403(ingest: IngestHarness) -> None:
    response = await ingest.client.post(
        "/v1/cdrs", json=[make_cdr()], headers=await ingest.token("viewer")
    )

    assert response.status_code == 403
    assert ingest.publisher.batches == []


async def test_admin_token_may_ingest(ingest: IngestHarness) -> None:
    response = await ingest.client.post(
        "/v1/cdrs", json=[make_cdr()], headers=await ingest.token("admin")
    )

    assert response.status_code == 202


async def test_auth_is_checked_before_the_body_is_judged(ingest: IngestHarness) -> None:
    response = await ingest.client.post(
        "/v1/cdrs", content=b"garbage", headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 401


async def test_tenant_bound_token_stamps_its_tenant_and_refuses_another(
    ingest: IngestHarness,
) -> None:
    headers = await ingest.token("ingest", tenant="acme")

    response = await ingest.client.post(
        "/v1/cdrs",
        json=[make_cdr("a"), make_cdr("b", tenant_id="acme"), make_cdr("c", tenant_id="other")],
        headers=headers,
    )

    assert response.status_code == 202
    result = response.json()
    assert result["accepted"] == 2
    assert result["rejected"] == [
        {
            "index": 2,
            "call_id": "c",
            "errors": [
                {"field": "tenant_id", "message": "tenant_id is not the token's tenant (acme)"}
            ],
        }
    ]
    assert [r.tenant_id for r in ingest.publisher.records] == ["acme", "acme"]
    assert ingest.metric("cdrwatch_cdrs_rejected_total", reason="tenant_mismatch") == 1


async def test_unbound_token_writes_only_the_default_tenant(ingest: IngestHarness) -> None:
    response = await post(
        ingest, [make_cdr("a", tenant_id="t1"), make_cdr("b"), make_cdr("c", tenant_id="default")]
    )

    assert response.status_code == 202
    assert response.json()["rejected"] == [
        {
            "index": 0,
            "call_id": "a",
            "errors": [
                {
                    "field": "tenant_id",
                    "message": "an unbound token writes only the default tenant (default)",
                }
            ],
        }
    ]
    assert [(r.call_id, r.tenant_id) for r in ingest.publisher.records] == [
        ("b", "default"),
        ("c", "default"),
    ]
    assert ingest.metric("cdrwatch_cdrs_rejected_total", reason="tenant_mismatch") == 1


async def test_default_tenant_is_a_setting(
    ingest_harness: Callable[..., contextlib.AbstractAsyncContextManager[IngestHarness]],
) -> None:
    async with ingest_harness(default_tenant="house") as harness:
        response = await post(harness, [make_cdr("a"), make_cdr("b", tenant_id="default")])

        assert response.json()["accepted"] == 1
        assert [r.tenant_id for r in harness.publisher.records] == ["house"]


# --- metrics ------------------------------------------------------------------------------


async def test_metrics_count_received_rejected_and_request_time(ingest: IngestHarness) -> None:
    await post(ingest, [make_cdr("a"), make_cdr("b", amd_result="fax"), make_cdr("c")])
    await post(ingest, b"[not json")

    assert ingest.metric("cdrwatch_cdrs_received_total", source="http") == 3
    assert ingest.metric("cdrwatch_cdrs_rejected_total", reason="invalid") == 1
    assert ingest.metric("cdrwatch_ingest_request_seconds_count") == 2

    text = (await ingest.client.get("/metrics")).text
    assert 'cdrwatch_cdrs_received_total{source="http"} 3.0' in text
    assert 'cdrwatch_cdrs_received_total{source="kafka"} 0.0' in text
