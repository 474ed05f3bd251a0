"""The ingest app's wiring: health, readiness, metrics, pseudonym key, real lifespan."""

from __future__ import annotations

import socket
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest

from schemas.cdr_v1 import NormalizedCdrV1
from services.common.settings import IngestSettings
from services.ingest.app import create_app, load_pseudonym_key
from services.ingest.service import KafkaPublisher, PublisherUnavailable, encode_record

CDR = {
    "call_id": "c-1",
    "campaign_id": "energia-primavera",
    "callee_number": "+393471234567",
    "originated_at": "2026-03-02T10:15:00+01:00",
    "ended_at": "2026-03-02T10:16:00+01:00",
}

if TYPE_CHECKING:
    from tests.service.conftest import IngestHarness


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_healthz_and_readyz(ingest: IngestHarness) -> None:
    assert (await ingest.client.get("/healthz")).status_code == 200
    assert (await ingest.client.get("/readyz")).status_code == 200

    ingest.publisher.ready = False

    assert (await ingest.client.get("/healthz")).status_code == 200
    assert (await ingest.client.get("/readyz")).status_code == 503


async def test_metrics_are_prometheus_text(ingest: IngestHarness) -> None:
    response = await ingest.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE cdrwatch_cdrs_rejected_total counter" in response.text
    assert "# TYPE cdrwatch_ingest_request_seconds histogram" in response.text


async def test_openapi_documents_the_ingest_route(ingest: IngestHarness) -> None:
    schema = (await ingest.client.get("/openapi.json")).json()

    operation = schema["paths"]["/v1/cdrs"]["post"]
    assert {"202", "400", "413", "415", "422", "503"} <= set(operation["responses"])
    assert "application/x-ndjson" in operation["requestBody"]["content"]


def test_pseudonym_key_from_settings(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path, pseudonym_key="  a-long-enough-secret-key  ")

    assert load_pseudonym_key(settings) == b"a-long-enough-secret-key"
    assert not (tmp_path / "pseudonym.key").exists()


def test_short_pseudonym_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        load_pseudonym_key(IngestSettings(data_dir=tmp_path, pseudonym_key="short"))


def test_pseudonym_key_file_is_created_once_private_and_kept(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path / "data", pseudonym_key=None)

    first = load_pseudonym_key(settings)
    second = load_pseudonym_key(settings)

    path = tmp_path / "data" / "pseudonym.key"
    assert first == second
    assert len(bytes.fromhex(first.decode())) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]


def test_encode_record_keys_by_campaign_and_serialises_by_alias() -> None:
    record = NormalizedCdrV1.model_validate(
        {
            **{k: v for k, v in CDR.items() if k != "callee_number"},
            "campaign_id": "campagna-è",
            "callee_key": "0" * 32,
            "answered_at": 1772442905250,
            "agent_connected_at": "2026-03-02T10:15:06.000001+01:00",
            "callee_zones": ["Europe/Rome"],
            "extra": {"lead": {"id": 7, "tags": ["a"]}, "score": 0.5},
            "accepted_at": datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        }
    )

    key, value = encode_record(record)

    assert key == "campagna-è".encode()
    assert value == orjson.dumps(record.model_dump(mode="json", by_alias=True))
    decoded = orjson.loads(value)
    assert decoded["originated_at"] == "2026-03-02T09:15:00Z"
    assert decoded["answered_at"] == "2026-03-02T09:15:05.250000Z"
    assert decoded["callee_zones"] == ["Europe/Rome"]
    assert NormalizedCdrV1.model_validate(decoded) == record


async def test_kafka_publisher_not_connected_refuses_batches(tmp_path: Path) -> None:
    publisher = KafkaPublisher(IngestSettings(data_dir=tmp_path))

    assert publisher.ready is False
    with pytest.raises(PublisherUnavailable):
        await publisher.send_batch([])


async def test_app_with_real_wiring_answers_503_while_the_broker_is_unreachable(
    tmp_path: Path,
) -> None:
    """No injected publisher or token store: the lifespan migrates SQLite under data_dir
    and connects to Kafka in the background; until it does, readyz and POST say 503."""
    settings = IngestSettings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=f"127.0.0.1:{closed_port()}",
        pseudonym_key=None,
        send_timeout_seconds=1.0,
    )
    app = create_app(settings)

    async with app.router.lifespan_context(app):
        token = await app.state.tokens.create("ingest")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            ready = await client.get("/readyz")
            response = await client.post(
                "/v1/cdrs", json=[CDR], headers={"Authorization": f"Bearer {token}"}
            )

    assert ready.status_code == 503
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert (tmp_path / "data" / "cdrwatch.db").exists()
    assert (tmp_path / "data" / "pseudonym.key").exists()
