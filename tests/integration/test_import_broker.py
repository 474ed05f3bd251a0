"""`cdrwatch import` through the ingest app into a real Kafka-protocol broker (the session's
embedded Tansu): every call of an Asterisk Master.csv (rows joined by linkedid) lands on
cdrwatch.cdrs.v1 once, pseudonymised; the refused one is named by its line; a re-run with
the checkpoint sends nothing again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from schemas import topics
from services.common.kafka import ensure_topics
from services.common.settings import IngestSettings
from services.importer import HttpSink, ImportOptions, run_import
from services.ingest.app import create_app
from services.ingest.formats import load_mapping
from tests.helpers import wait_until_async

pytestmark = pytest.mark.integration


def rows(campaign: str) -> str:
    out = []
    for n in range(20):
        uid = f"1772445600.{n}"
        number = f"+3934712{n:05d}"
        start, answer, end = "2026-03-02 10:00:00", "2026-03-02 10:00:05", "2026-03-02 10:01:00"
        if n == 3:  # a parallel-dial leg that lost, joined into call 3
            out.append(
                f'"{campaign}","1","{number}","out","x","SIP/t-{n}","SIP/b-{n}","Dial","SIP/b",'
                f'"{start}",,"{end}",60,0,"NO ANSWER","DOCUMENTATION","{uid}","","","{uid}",0\n'
            )
        if n == 7:  # ends before it starts: refused by ingest, named by its line
            end = "2026-03-02 09:00:00"
        out.append(
            f'"{campaign}","1","{number}","out","x","SIP/t-{n}","SIP/a-{n}","Dial","SIP/a",'
            f'"{start}","{answer}","{end}",60,55,"ANSWERED","DOCUMENTATION","{uid}","","",'
            f'"{uid}",1\n'
        )
    return "".join(out)


async def test_import_lands_every_call_once_on_the_broker(
    kafka_broker: str, tmp_path: Path, unique_name: Any
) -> None:
    await ensure_topics(kafka_broker, 4, [topics.CDRS, topics.CDRS_RAW, topics.CDRS_DLQ])
    campaign = unique_name("import")
    master = tmp_path / "Master.csv"
    master.write_text(rows(campaign))
    settings = IngestSettings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka_broker,
        kafka_idempotence=False,
        pseudonym_key="integration-test-pseudonym-key",
        consume_raw=False,
    )
    app = create_app(settings, registry=CollectorRegistry())
    mapping = load_mapping(
        "asterisk-cdr-csv", overrides={"timezone": "Europe/Rome", "group_window_rows": 5}
    )
    checkpoint = tmp_path / "cp.json"
    consumer = AIOKafkaConsumer(
        topics.CDRS,
        bootstrap_servers=kafka_broker,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: list[dict[str, Any]] = []
    raw_values: list[bytes] = []

    async def landed() -> list[dict[str, Any]]:
        batches = await consumer.getmany(timeout_ms=200, max_records=5000)
        for records in batches.values():
            for record in records:
                for cdr in orjson.loads(record.value)["cdrs"]:  # a CdrBatchV1 envelope
                    if cdr["campaign_id"] == campaign:
                        seen.append(cdr)
                        raw_values.append(record.value)
        return seen

    await consumer.start()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
                await wait_until_async(
                    lambda: _ready(c), timeout=30, message="ingest connected to the broker"
                )
            token = await app.state.tokens.create("ingest")
            options = ImportOptions(
                paths=[master],
                format="asterisk-cdr-csv",
                mapping=mapping,
                checkpoint=checkpoint,
                batch_size=8,
                progress=False,
            )
            summary = await run_import(
                options, HttpSink("http://ingest", token, transport=httpx.ASGITransport(app=app))
            )
            assert summary.rows == 21
            assert summary.imported == 19
            [rejected] = summary.rejected
            assert (rejected.line, rejected.reason) == (9, "invalid ended_at")

            await wait_until_async(
                lambda: _count(landed, 19), timeout=30, message="19 calls downstream"
            )
            again = await run_import(
                options, HttpSink("http://ingest", token, transport=httpx.ASGITransport(app=app))
            )
            assert again.rows == 0 and again.imported == 0  # resumed at the end
    finally:
        await consumer.stop()

    call_ids = sorted(r["call_id"] for r in seen)
    assert call_ids == sorted(f"1772445600.{n}" for n in range(20) if n != 7)
    three = next(r for r in seen if r["call_id"] == "1772445600.3")
    assert three["answered_at"] == "2026-03-02T09:00:05Z"
    assert all(b"3934712" not in value for value in raw_values)  # pseudonymised


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _count(poll: Any, expected: int) -> bool:
    return len(await poll()) >= expected
