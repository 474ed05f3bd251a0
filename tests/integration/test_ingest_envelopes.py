"""One Kafka record per (request, campaign) on cdrwatch.cdrs.v1 (issue 7 item 1), read back
from a real Kafka-protocol broker (the session's embedded Tansu): a POST of records of two
campaigns lands as exactly two envelopes, keyed by campaign, holding the good records in
the order they were sent; the bad one is rejected alone with its index and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from schemas import topics
from schemas.cdr_batch_v1 import CdrBatchV1
from services.common.kafka import ensure_topics
from services.common.settings import IngestSettings
from services.ingest.app import create_app
from tests.helpers import wait_until_async
from tests.service.records import make_cdr

pytestmark = pytest.mark.integration


async def test_a_request_lands_as_one_envelope_per_campaign(
    kafka_broker: str, tmp_path: Path, unique_name: Any
) -> None:
    await ensure_topics(kafka_broker, 4, [topics.CDRS, topics.CDRS_RAW, topics.CDRS_DLQ])
    first, second = unique_name("envelope"), unique_name("envelope")
    body = [make_cdr(f"c-{n}", campaign_id=first if n % 3 else second) for n in range(30)]
    body[4] = make_cdr("c-4", campaign_id=first, ended_at="2026-03-02T09:00:00+01:00")
    settings = IngestSettings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka_broker,
        kafka_idempotence=False,
        pseudonym_key="integration-test-pseudonym-key",
        consume_raw=False,
    )
    app = create_app(settings, registry=CollectorRegistry())
    consumer = AIOKafkaConsumer(
        topics.CDRS,
        bootstrap_servers=kafka_broker,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    ours: list[tuple[bytes, CdrBatchV1]] = []

    async def landed() -> int:
        batches = await consumer.getmany(timeout_ms=200, max_records=5000)
        for records in batches.values():
            for record in records:
                if record.key in (first.encode(), second.encode()):
                    ours.append((record.key, CdrBatchV1.model_validate_json(record.value)))
        return sum(len(batch.cdrs) for _, batch in ours)

    await consumer.start()
    try:
        async with app.router.lifespan_context(app):
            token = await app.state.tokens.create("ingest")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
                await wait_until_async(
                    lambda: _ready(c), timeout=30, message="ingest connected to the broker"
                )
                answer = await c.post(
                    "/v1/cdrs", json=body, headers={"Authorization": f"Bearer {token}"}
                )
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == 29
        assert [
            (r["index"], [e["field"] for e in r["errors"]]) for r in answer.json()["rejected"]
        ] == [(4, ["ended_at", "agent_connected_at"])]
        await wait_until_async(lambda: _at_least(landed, 29), timeout=30, message="29 CDRs")
        await landed()  # one more fetch: a third envelope would show below
    finally:
        await consumer.stop()

    assert sorted(key for key, _ in ours) == sorted([first.encode(), second.encode()])
    by_key = {key.decode(): [c.call_id for c in batch.cdrs] for key, batch in ours}
    assert by_key == {
        first: [f"c-{n}" for n in range(30) if n % 3 and n != 4],
        second: [f"c-{n}" for n in range(30) if n % 3 == 0],
    }
    assert all(batch.campaign_id == key.decode() for key, batch in ours)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _at_least(poll: Any, expected: int) -> bool:
    return await poll() >= expected
