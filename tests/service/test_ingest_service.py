"""IngestService without HTTP: the use case the raw-topic validator reuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from services.common.auth import Principal
from services.common.settings import IngestSettings
from services.ingest.metrics import IngestMetrics
from services.ingest.normalize import Normalizer
from services.ingest.service import VALIDATION_SLICE, IngestService, PublisherUnavailable
from tests.helpers import LoopTurns

if TYPE_CHECKING:
    from tests.service.conftest import FakePublisher

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
UNBOUND = Principal(role="ingest", tenant_id=None)


def make_cdr(call_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "campaign_id": "camp",
        "callee_number": f"+3934712{int(call_id) % 100000:05d}"
        if call_id.isdigit()
        else "+393471234567",
        "originated_at": "2026-03-02T10:15:00+01:00",
        "ended_at": "2026-03-02T10:16:00+01:00",
        **changes,
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def service(
    tmp_path: Path, fake_publisher: FakePublisher, registry: CollectorRegistry
) -> IngestService:
    settings = IngestSettings(data_dir=tmp_path, pseudonym_key="service-test-pseudonym-key")
    normalizer = Normalizer(b"service-test-pseudonym-key", lambda: NOW, timedelta(hours=1))
    return IngestService(settings, fake_publisher, normalizer, IngestMetrics(registry))


async def test_records_from_kafka_are_counted_and_marked_by_source(
    service: IngestService, fake_publisher: FakePublisher, registry: CollectorRegistry
) -> None:
    result = await service.ingest([make_cdr("1"), make_cdr("2")], UNBOUND, source="kafka")

    assert result.accepted == 2
    assert {record.source for record in fake_publisher.records} == {"kafka"}
    assert registry.get_sample_value("cdrwatch_cdrs_received_total", {"source": "kafka"}) == 2
    assert registry.get_sample_value("cdrwatch_cdrs_received_total", {"source": "http"}) == 0


async def test_large_batch_gives_the_same_answer_as_record_by_record(
    service: IngestService, fake_publisher: FakePublisher
) -> None:
    """A body above `VALIDATION_SLICE` records is validated a slice at a time, the event
    loop running between two slices; order, indexes, repeats across slices and counts hold,
    and every record has the body's one `accepted_at`."""
    readings = iter(NOW + timedelta(seconds=n) for n in range(10_000))
    service.normalizer = Normalizer(
        b"service-test-pseudonym-key", lambda: next(readings), timedelta(hours=1)
    )
    items: list[object] = [make_cdr(str(i)) for i in range(1000)]
    items[10] = make_cdr("10", amd_result="fax")
    items[500] = make_cdr("7")  # a repeat of record 7, in the second slice
    items[999] = "not a record"
    turns = await LoopTurns().start()
    result = await service.ingest(items, UNBOUND)
    turns.stop()

    assert len(items) > VALIDATION_SLICE
    assert turns.count >= len(items) // VALIDATION_SLICE - 1
    assert result.accepted == 997
    assert result.duplicates == 1
    assert [(r.index, r.call_id) for r in result.rejected] == [(10, "10"), (999, None)]
    published = [record.call_id for record in fake_publisher.records]
    assert published == [str(i) for i in range(999) if i not in (10, 500)]
    assert {record.accepted_at for record in fake_publisher.records} == {NOW}


async def test_publisher_failure_propagates_and_reports_nothing_accepted(
    service: IngestService, fake_publisher: FakePublisher, registry: CollectorRegistry
) -> None:
    fake_publisher.fail = True

    with pytest.raises(PublisherUnavailable):
        await service.ingest([make_cdr("1")], UNBOUND)

    assert fake_publisher.records == []
    value = registry.get_sample_value("cdrwatch_cdrs_rejected_total", {"reason": "publish_failed"})
    assert value == 1
