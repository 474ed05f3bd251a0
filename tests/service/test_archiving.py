"""The durable archive seen from the services that write it (fakes for the broker):
ingest archives exactly what it publishes and takes back what the broker refused, the raw
validator and the campaign settings archive too, readiness and fail-fast tell the truth,
and the api maps a rebuilt detector's alerts onto the ones it holds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from schemas import topics
from schemas.cdr_batch_v1 import envelopes
from services.api.consumer import apply_messages
from services.api.models import CampaignConfig
from services.api.publisher import (
    ArchivingCampaignPublisher,
    PublishUnavailable,
    campaign_record,
)
from services.api.store import AlertStore
from services.common.archive import Archive
from services.common.auth import Principal
from services.common.db import create_engine, migrate
from services.common.settings import IngestSettings
from services.ingest.app import create_app
from services.ingest.metrics import IngestMetrics
from services.ingest.normalize import Normalizer
from services.ingest.raw import RawMessage, RawValidator
from services.ingest.service import (
    ArchivingPublisher,
    IngestService,
    KafkaPublisher,
    PublisherUnavailable,
    encode_record,
)
from tests.helpers import cdrs_of
from tests.service.test_api_store import T0, alert
from tests.service.test_ingest_raw_validator import FakeProducer

if TYPE_CHECKING:
    from tests.service.conftest import FakePublisher

KEY = "archiving-test-pseudonym-key"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
UNBOUND = Principal(role="ingest", tenant_id=None)


def make_cdr(call_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "campaign_id": "camp",
        "callee_number": "+393471234567",
        "originated_at": "2026-03-02T10:15:00+01:00",
        "ended_at": "2026-03-02T10:16:00+01:00",
        **changes,
    }


def archived_values(archive: Archive) -> list[bytes]:
    return [value for batch in archive.cdr_batches() for _, _, value in batch]


@pytest.fixture
def archive(tmp_path: Path) -> Any:
    with Archive.in_data_dir(tmp_path) as opened:
        yield opened


@pytest.fixture
def service(tmp_path: Path, fake_publisher: FakePublisher, archive: Archive) -> IngestService:
    settings = IngestSettings(data_dir=tmp_path, pseudonym_key=KEY)
    normalizer = Normalizer(KEY.encode(), lambda: NOW, timedelta(hours=1))
    publisher = ArchivingPublisher(fake_publisher, archive)
    return IngestService(settings, publisher, normalizer, IngestMetrics(CollectorRegistry()))


async def test_an_accepted_batch_is_archived_byte_for_byte_as_published(
    service: IngestService, fake_publisher: FakePublisher, archive: Archive
) -> None:
    result = await service.ingest([make_cdr("1"), make_cdr("bad", ended_at="x")], UNBOUND)

    assert result.accepted == 1
    # One CdrBatchV1 envelope per (request, campaign), archived exactly as it was sent.
    published = envelopes([encode_record(record) for record in fake_publisher.records])
    archived = [(key, value) for batch in archive.cdr_batches() for _, key, value in batch]
    assert archived == published
    assert b"393471234567" not in archived[0][1]  # pseudonymised, as on the topic


async def test_a_batch_the_broker_refused_is_taken_out_of_the_archive(
    service: IngestService, fake_publisher: FakePublisher, archive: Archive
) -> None:
    await service.ingest([make_cdr("1")], UNBOUND)
    fake_publisher.fail = True

    with pytest.raises(PublisherUnavailable):
        await service.ingest([make_cdr("2"), make_cdr("3")], UNBOUND)

    assert [orjson_call_id(v) for v in archived_values(archive)] == ["1"]


def orjson_call_id(value: bytes) -> str:
    """The call id of an archived message holding one CDR (an envelope of one)."""
    [cdr] = cdrs_of(value)
    return str(cdr["call_id"])


async def test_an_unwritable_archive_refuses_the_batch_before_anything_is_published(
    service: IngestService, fake_publisher: FakePublisher, archive: Archive
) -> None:
    archive.close()  # every write now fails

    with pytest.raises(PublisherUnavailable, match="archive"):
        await service.ingest([make_cdr("1")], UNBOUND)

    assert fake_publisher.records == []


async def test_kafka_publisher_fails_fast_while_the_broker_does_not_answer(
    tmp_path: Path,
) -> None:
    settings = IngestSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    publisher = KafkaPublisher(settings)
    await publisher.start()
    try:
        started = time.monotonic()
        with pytest.raises(PublisherUnavailable):
            await publisher.send_encoded([(b"k", b"v")])
        assert time.monotonic() - started < 1.0
        assert await publisher.check_ready() is False
    finally:
        await publisher.stop()


async def test_ingest_answers_503_and_readyz_says_recovering_while_the_marker_exists(
    tmp_path: Path, fake_publisher: FakePublisher, token_store: Any
) -> None:
    marker = tmp_path / "recovering"
    settings = IngestSettings(
        data_dir=tmp_path,
        pseudonym_key=KEY,
        consume_raw=False,
        recovery_marker=marker,
        kafka_bootstrap="127.0.0.1:1",
    )
    app = create_app(settings, tokens=token_store)  # the real Kafka publisher
    token = await token_store.create("ingest")
    marker.write_text("")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            ready = await client.get("/readyz")
            started = time.monotonic()
            posted = await client.post(
                "/v1/cdrs", json=[make_cdr("1")], headers={"Authorization": f"Bearer {token}"}
            )
            elapsed = time.monotonic() - started
    assert ready.status_code == 503
    assert ready.json()["status"] == "recovering"
    assert posted.status_code == 503
    assert posted.headers["Retry-After"]
    assert elapsed < 1.0


# --- the raw validator ------------------------------------------------------------------


def raw(offset: int, record: dict[str, Any]) -> RawMessage:
    import orjson

    return RawMessage(topics.CDRS_RAW, 0, offset, orjson.dumps(record))


async def test_the_raw_validator_archives_what_it_published_and_not_what_failed(
    tmp_path: Path, archive: Archive
) -> None:
    settings = IngestSettings(data_dir=tmp_path, pseudonym_key=KEY)
    normalizer = Normalizer(KEY.encode(), lambda: NOW, timedelta(hours=1))
    validator = RawValidator(
        settings, normalizer, IngestMetrics(CollectorRegistry()), archive=archive
    )
    producer = FakeProducer()

    assert await validator.handle([raw(0, make_cdr("1")), raw(1, {"bad": 1})], producer)
    producer.fail = True
    assert not await validator.handle([raw(2, make_cdr("2"))], producer)

    published = [value for topic, _, value in producer.sent if topic == topics.CDRS]
    assert archived_values(archive) == published
    assert [orjson_call_id(v) for v in published] == ["1"]


# --- campaign settings ------------------------------------------------------------------


class FakeCampaignPublisher:
    def __init__(self) -> None:
        self.published: list[CampaignConfig] = []
        self.fail = False

    async def publish(self, config: CampaignConfig) -> None:
        if self.fail:
            raise PublishUnavailable("fake broker is down")
        self.published.append(config)


def config(profile: str) -> CampaignConfig:
    return CampaignConfig(campaign_id="c1", profile=profile, tenant_id="t1", updated_at=NOW)


async def test_campaign_settings_are_archived_once_acknowledged_newest_per_key(
    archive: Archive,
) -> None:
    inner = FakeCampaignPublisher()
    publisher = ArchivingCampaignPublisher(inner, archive)

    await publisher.publish(config("it"))
    await publisher.publish(config("uk"))
    inner.fail = True
    with pytest.raises(PublishUnavailable):
        await publisher.publish(config("us"))

    assert archive.settings() == [campaign_record(config("uk"))]


async def test_a_setting_the_archive_cannot_keep_is_a_503_not_a_silent_loss(
    archive: Archive,
) -> None:
    publisher = ArchivingCampaignPublisher(FakeCampaignPublisher(), archive)
    archive.close()

    with pytest.raises(PublishUnavailable, match="archive"):
        await publisher.publish(config("it"))


# --- the api after a rebuild --------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await migrate(engine)
    yield AlertStore(engine, clock=lambda: T0 + timedelta(hours=2))
    await engine.dispose()


async def test_a_rebuilt_episode_under_a_new_id_is_the_alert_already_held(
    store: AlertStore,
) -> None:
    from services.api.consumer import alert_message

    rule = "it-silent-rate-15m"
    held = alert(rule=rule, alert_id="first-id", severity="violation", opened=T0)
    await apply_messages(store, [alert_message(held)])
    await store.ack("first-id", by="officer", note="looked at it", tenant_id=None)
    rebuilt = alert(
        rule=rule, alert_id="rebuilt-id", severity="violation", opened=T0 + timedelta(hours=1)
    ).model_copy(update={"numerator": 30})

    await apply_messages(store, [alert_message(rebuilt, replayed=True)])
    page = await store.list_alerts(tenant_id=None)
    assert [a.id for a in page.items] == ["first-id"]
    assert page.items[0].opened_at == T0
    assert page.items[0].numerator == 30

    # Live messages of the rebuilt detector keep landing on the held alert.
    resolved = rebuilt.model_copy(update={"state": "resolved", "resolved_at": T0})
    await apply_messages(store, [alert_message(resolved)])
    detail = await store.get_alert("first-id", tenant_id=None)
    assert detail is not None
    assert detail.state == "resolved"
    assert detail.opened_at == T0
    assert detail.ack_note == "looked at it"
    assert [(h.kind, h.state, h.severity) for h in detail.history] == [
        ("opened", "firing", "violation"),
        ("acknowledged", "firing", "violation"),
        ("resolved", "resolved", "violation"),
    ]
    assert await store.get_alert("rebuilt-id", tenant_id=None) is None


async def test_a_replayed_alert_of_another_window_is_a_new_alert(store: AlertStore) -> None:
    from services.api.consumer import alert_message

    held = alert(rule="uk-calling-hours", alert_id="day-1")
    other_day = alert(rule="uk-calling-hours", alert_id="day-2").model_copy(
        update={
            "window": held.window.model_copy(
                update={"start": T0 + timedelta(days=1), "end": T0 + timedelta(days=2)}
            )
        }
    )
    await apply_messages(store, [alert_message(held)])
    await apply_messages(store, [alert_message(other_day, replayed=True)])

    page = await store.list_alerts(tenant_id=None)
    assert sorted(a.id for a in page.items) == ["day-1", "day-2"]


async def test_the_recovery_marker_makes_the_api_not_ready(tmp_path: Path) -> None:
    from services.api.app import create_app as create_api
    from services.common.settings import ApiSettings
    from tests.service.test_api_routes import FakePublisher as FakeApiPublisher

    marker = tmp_path / "recovering"
    marker.write_text("")
    settings = ApiSettings(
        data_dir=tmp_path, recovery_marker=marker, serve_ingest=False, pseudonym_key=KEY
    )

    class Idle:
        async def start(self) -> None:
            await asyncio.sleep(3600)

        async def stop(self) -> None:
            pass

    app = create_api(settings, campaign_publisher=FakeApiPublisher(), consumer_factory=Idle)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["broker"] == "recovering"


def _episode(alert_id: str, start: datetime, *, rule: str = "it-silent-rate-15m") -> Any:
    base = alert(rule=rule, alert_id=alert_id, severity="warning", opened=start)
    window = base.window.model_copy(update={"start": start, "end": start + timedelta(minutes=15)})
    return base.model_copy(update={"window": window})


async def test_a_live_episode_resolves_the_earlier_one_that_lost_its_resolution(
    store: AlertStore,
) -> None:
    """The detector opens a rolling rule's episode only after the previous one resolved; a
    killed detector can keep the resolution in its state and lose the message. The next
    live episode then resolves the orphan (history and webhooks see it); day windows, other
    rules and replayed messages leave firing alerts alone."""
    from services.api.consumer import alert_message

    first = _episode("episode-1", T0)
    day_1 = alert(rule="it-calling-hours", alert_id="day-1")
    await apply_messages(store, [alert_message(first), alert_message(day_1)])
    # A replayed episode never closes one held (it may be the same episode, rebuilt).
    replayed = _episode("episode-r", T0 + timedelta(minutes=30))
    await apply_messages(store, [alert_message(replayed, replayed=True)])
    assert (await store.get_alert("episode-1", tenant_id=None)).state == "firing"  # type: ignore[union-attr]

    second = _episode("episode-2", T0 + timedelta(minutes=40))
    day_2 = alert(rule="it-calling-hours", alert_id="day-2")
    await apply_messages(store, [alert_message(second), alert_message(day_2)])
    orphan = await store.get_alert("episode-1", tenant_id=None)
    assert orphan is not None
    assert (orphan.state, orphan.resolved_at) == ("resolved", second.opened_at)
    assert [(h.kind, h.state) for h in orphan.history] == [
        ("opened", "firing"),
        ("resolved", "resolved"),
    ]
    states = {a.id: a.state for a in (await store.list_alerts(tenant_id=None)).items}
    assert states["episode-2"] == "firing"
    assert states["day-1"] == states["day-2"] == "firing"
