"""Dead letters (cdrwatch.cdrs.dlq.v1) counted per (tenant, campaign, stage, reason) by the
api's consumer and shown per campaign: decoding, counts, restart idempotence, the routes
and their tenant scoping, and what a broker restart empties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import TopicPartition

from schemas import topics
from services.api.consumer import (
    Message,
    StoreConsumer,
    UnreadableMessage,
    apply_messages,
    decode_dead_letter,
    parse_messages,
)
from services.api.store import AlertStore, RejectionSeen
from services.common.db import create_engine, migrate
from services.common.settings import ApiSettings
from services.ingest import raw
from services.ingest.normalize import Normalizer
from tests.service.records import make_cdr
from tests.service.test_api_consumer import FakeConsumer, Record
from tests.service.test_api_routes import api, minute  # noqa: F401  (fixture)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DLQ_0 = TopicPartition(topics.CDRS_DLQ, 0)


def too_late(call_id: str, campaign: str, tenant: str = "default") -> bytes:
    """A too-late dead letter as the detector writes it (services/detector/app.py)."""
    return orjson.dumps(
        {
            "reason": "too_late",
            "stage": "cdr",
            "detail": "originated_at more than 7 days before the campaign's newest call",
            "source": {"topic": topics.CDRS, "partition": 0, "offset": 12},
            "record": {"call_id": call_id, "campaign_id": campaign, "tenant_id": tenant},
        }
    )


def raw_reject(record: object, reason: str = "invalid") -> bytes:
    """A raw validator's dead letter (services/ingest/raw.py)."""
    return orjson.dumps(
        {
            "reason": reason,
            "stage": "raw-validator",
            "errors": [{"field": "callee", "message": "not a phone number"}],
            "source": {"topic": topics.CDRS_RAW, "partition": 0, "offset": 3},
            "record": record,
        }
    )


def dlq(value: bytes) -> Message:
    return Message(topics.CDRS_DLQ, b"too_late", value)


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            too_late("k1", "spring", "acme"),
            RejectionSeen("acme", "spring", "cdr", "too_late", "k1"),
        ),
        (
            raw_reject({"call_id": "r1", "campaign_id": "spring", "callee": "x"}),
            RejectionSeen("default", "spring", "raw-validator", "invalid", "r1"),
        ),
        (
            raw_reject({"tenant_id": "acme", "callee": "x"}),
            RejectionSeen("acme", "", "raw-validator", "invalid", None),
        ),
        (raw_reject("{not json", "unreadable"), None),
        (raw_reject(None, "unreadable"), None),
        (raw_reject([1, 2]), None),
        (
            raw_reject({"call_id": 7, "campaign_id": "spring\x00", "tenant_id": "a" * 201}),
            None,
        ),
    ],
    ids=[
        "too-late-names-its-campaign",
        "raw-record-without-tenant-is-the-default-tenants",
        "tenant-known-campaign-not",
        "undecodable-text",
        "tombstone",
        "not-an-object",
        "unusable-fields-attribute-nothing",
    ],
)
def test_a_dead_letter_is_attributed_to_what_its_record_names(value, expected):
    assert decode_dead_letter(value, "default") == expected


def test_the_raw_validators_own_dead_letters_decode():
    """Envelopes written by the raw validator's code, not by hand: the decoder follows it."""
    normalizer = Normalizer(b"service-test-pseudonym-key", lambda: T0, timedelta(hours=1))
    messages = [
        raw.RawMessage(topics.CDRS_RAW, 0, 0, orjson.dumps(make_cdr("bad-1", callee_number="x"))),
        raw.RawMessage(
            topics.CDRS_RAW,
            0,
            1,
            orjson.dumps(make_cdr("bad-2", tenant_id="acme", campaign_id=None, ended_at="?")),
        ),
        raw.RawMessage(topics.CDRS_RAW, 0, 2, b"\xff not json"),
    ]
    batch = raw.validate_messages(messages, normalizer)
    letters = [r.value for r in batch.records if r.topic == topics.CDRS_DLQ]
    assert [decode_dead_letter(v, "default") for v in letters] == [
        RejectionSeen("default", "energia-primavera", "raw-validator", "invalid", "bad-1"),
        RejectionSeen("acme", "", "raw-validator", "invalid", "bad-2"),
        None,
    ]


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[]", orjson.dumps({"stage": "cdr"}), orjson.dumps({"reason": "x" * 61})],
    ids=["broken-json", "not-an-object", "no-reason", "reason-too-long"],
)
def test_an_envelope_without_reason_and_stage_is_unreadable(value):
    with pytest.raises((UnreadableMessage, orjson.JSONDecodeError)):
        decode_dead_letter(value, "default")
    skipped: list[str] = []
    assert not parse_messages([dlq(value)], skipped=skipped.append).rejections
    assert skipped == [topics.CDRS_DLQ]


# --- store ---------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await migrate(engine)
    yield AlertStore(engine, clock=lambda: T0)
    await engine.dispose()


async def test_a_consumer_restart_does_not_count_a_batch_twice(store, tmp_path):
    """The batch was stored but its Kafka commit was lost: the restarted consumer seeks to
    the position stored in the same transaction, so the dead letters are counted once."""
    settings = ApiSettings(data_dir=tmp_path, consumer_group="api-test", serve_ingest=False)
    records = [
        Record(topics.CDRS_DLQ, 0, offset, 0, b"too_late", too_late(f"k{offset}", "c1"), [])
        for offset in range(3)
    ]
    crashed = FakeConsumer([{DLQ_0: records}], commit_error=ConnectionError("broker gone"))
    with pytest.raises(ConnectionError):
        await StoreConsumer(settings, store).consume_once(crashed)
    assert await store.consumer_positions("api-test") == {(topics.CDRS_DLQ, 0): 3}
    [row] = await store.list_rejections(tenant_id=None, campaign_id="c1")
    assert row.count == 3


async def test_a_broker_restart_empties_the_replayed_stages_only(tmp_path, monkeypatch):
    """`cdrwatch up` on a fresh broker: the detector's rejections are derived again from
    the archive replay (so emptied, not counted twice); the raw validator's are not."""
    from services.cli import _prepare_store
    from services.common.settings import CommonSettings

    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    engine = create_engine(url)
    await migrate(engine)
    held = AlertStore(engine, clock=lambda: T0)
    await apply_messages(
        held,
        [
            dlq(too_late("k1", "c1")),
            dlq(raw_reject({"call_id": "r1", "campaign_id": "c1"})),
        ],
    )
    settings = CommonSettings(data_dir=tmp_path, database_url=url)
    await _prepare_store(settings, reset_derived=True)
    rows = await held.list_rejections(tenant_id=None, campaign_id="c1")
    assert [(r.stage, r.reason, r.count) for r in rows] == [("raw-validator", "invalid", 1)]
    await engine.dispose()


# --- routes --------------------------------------------------------------------------


async def test_campaign_shows_its_rejections_and_the_route_lists_them(api):  # noqa: F811
    await api.feed(
        minute("spring", T0, tenant="acme", attempts=1),
        dlq(too_late("late-1", "spring", "acme")),
        dlq(too_late("late-2", "spring", "acme")),
        dlq(raw_reject({"call_id": "bad-1", "campaign_id": "spring", "tenant_id": "acme"})),
        dlq(too_late("other", "spring", "globex")),
    )
    acme = await api.token("viewer", "acme")
    one = await api.client.get("/v1/campaigns/spring", headers=acme)
    assert one.status_code == 200
    assert one.json()["rejected_after_acceptance"] == {"too_late": 2, "invalid": 1}
    listed = await api.client.get("/v1/campaigns", headers=acme)
    assert listed.json()["items"][0]["rejected_after_acceptance"] == {
        "too_late": 2,
        "invalid": 1,
    }
    response = await api.client.get("/v1/campaigns/spring/rejections", headers=acme)
    assert response.status_code == 200
    body = response.json()
    assert (body["campaign_id"], body["tenant_id"]) == ("spring", "acme")
    assert [
        (i["stage"], i["reason"], i["count"], i["example_call_ids"]) for i in body["items"]
    ] == [
        ("cdr", "too_late", 2, ["late-1", "late-2"]),
        ("raw-validator", "invalid", 1, ["bad-1"]),
    ]
    assert body["items"][0]["first_seen_at"] == "2026-03-03T09:30:15Z"


async def test_rejections_are_tenant_scoped(api):  # noqa: F811
    await api.feed(
        minute("spring", T0, tenant="acme", attempts=1),
        dlq(too_late("late-1", "spring", "acme")),
        # globex's records were all rejected: its campaign exists only in the rejections
        dlq(too_late("g-1", "only-rejected", "globex")),
    )
    globex = await api.token("viewer", "globex")
    for path in ("/v1/campaigns/spring", "/v1/campaigns/spring/rejections"):
        response = await api.client.get(path, headers=globex)
        assert response.status_code == 404
        assert "late-1" not in response.text
    other = await api.client.get("/v1/campaigns/spring/rejections?tenant=acme", headers=globex)
    assert other.status_code == 404
    own = await api.client.get("/v1/campaigns/only-rejected/rejections", headers=globex)
    assert [i["example_call_ids"] for i in own.json()["items"]] == [["g-1"]]
    unbound = await api.token("viewer")
    named = await api.client.get("/v1/campaigns/spring/rejections?tenant=acme", headers=unbound)
    assert [i["count"] for i in named.json()["items"]] == [1]
    assert (
        await api.client.get("/v1/campaigns/nope/rejections", headers=unbound)
    ).status_code == 404
    ingest = await api.token("ingest", "acme")
    refused = await api.client.get("/v1/campaigns/spring/rejections", headers=ingest)
    assert refused.status_code == 403


async def test_records_without_a_readable_campaign_are_listed_under_their_tenant(api):  # noqa: F811
    await api.feed(
        dlq(raw_reject({"tenant_id": "acme", "call_id": "x1", "campaign_id": 5})),
        dlq(raw_reject({"tenant_id": "globex", "callee": "+39"})),
        dlq(raw_reject("{broken", "unreadable")),  # names nobody: not stored
    )
    acme = await api.token("viewer", "acme")
    response = await api.client.get("/v1/rejections/unattributed", headers=acme)
    assert response.status_code == 200
    assert [
        (i["tenant_id"], i["count"], i["example_call_ids"]) for i in response.json()["items"]
    ] == [("acme", 1, ["x1"])]
    foreign = await api.client.get("/v1/rejections/unattributed?tenant=globex", headers=acme)
    assert foreign.json()["items"] == []
    unbound = await api.token("viewer")
    every = await api.client.get("/v1/rejections/unattributed", headers=unbound)
    assert [(i["tenant_id"], i["reason"]) for i in every.json()["items"]] == [
        ("acme", "invalid"),
        ("globex", "invalid"),
    ]
