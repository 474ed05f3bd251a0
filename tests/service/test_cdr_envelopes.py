"""CDR batches on the wire (issue 7 item 1) as the services see them: the raw-topic
validator publishes one envelope per campaign of a fetched batch, the detector counts a
message of one record and an envelope alike, and validating a body at once keeps each
record's fate and errors as validating it alone gives them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from schemas import topics
from schemas.cdr_batch_v1 import CdrBatchV1, encode_batch
from services.detector.app import Detector
from services.ingest.metrics import IngestMetrics
from services.ingest.normalize import Normalizer
from services.ingest.parsing import UnreadableRecord
from services.ingest.raw import RawValidator
from services.ingest.service import check_item, validate_items
from tests.service import test_detector_adapter as adapter
from tests.service.records import make_cdr
from tests.service.test_detector_adapter import (
    FakeEvent,
    attempts_by_scope,
    cdr,
    handle_and_commit,
)
from tests.service.test_ingest_raw_validator import KEY, NOW, FakeProducer, message

detector = adapter.detector  # the adapter tests' fixture: a Detector with recorded outputs


async def test_the_raw_validator_publishes_one_envelope_per_campaign_of_a_batch(
    tmp_path: Any,
) -> None:
    from services.common.settings import IngestSettings

    settings = IngestSettings(data_dir=tmp_path, pseudonym_key=KEY.decode())
    registry = CollectorRegistry()
    normalizer = Normalizer(KEY, lambda: NOW, timedelta(hours=1))
    validator = RawValidator(settings, normalizer, IngestMetrics(registry))
    producer = FakeProducer()
    single = make_cdr("one")
    array = [make_cdr("two"), make_cdr("three", campaign_id="other")]

    delivered = await validator.handle([message(single), message(array, 1)], producer)

    assert delivered
    sent = [(key, CdrBatchV1.model_validate_json(v)) for t, key, v in producer.sent if v]
    assert [(key, [c.call_id for c in b.cdrs]) for key, b in sent] == [
        (b"energia-primavera", ["one", "two"]),
        (b"other", ["three"]),
    ]
    assert all(t == topics.CDRS for t, _k, _v in producer.sent)
    received = registry.get_sample_value("cdrwatch_cdrs_received_total", {"source": "kafka"})
    assert received == 3


async def test_a_single_record_and_an_envelope_are_both_counted(detector: Detector) -> None:
    single = orjson.dumps(cdr(0))
    envelope = encode_batch("campB", [orjson.dumps(cdr(n)) for n in range(1, 6)])

    await handle_and_commit(detector, [FakeEvent(single, 0), FakeEvent(envelope, 1)])

    assert attempts_by_scope(detector) == {("tenant-b", "campB"): 6}
    # Replayed after a restart (the same offsets again): nothing counted twice.
    await handle_and_commit(detector, [FakeEvent(single, 0), FakeEvent(envelope, 1)])
    assert attempts_by_scope(detector) == {("tenant-b", "campB"): 6}


async def test_a_bad_record_of_an_envelope_is_a_dead_letter_and_its_neighbours_count(
    detector: Detector,
) -> None:
    records = [cdr(n) for n in range(3)]
    records[1]["originated_at"] = "yesterday"
    envelope = orjson.dumps({"campaign_id": "campB", "cdrs": records})

    await handle_and_commit(detector, [FakeEvent(envelope, 4)])

    assert attempts_by_scope(detector) == {("tenant-b", "campB"): 2}
    [dead] = detector.dlq.values()  # type: ignore[attr-defined]
    assert (dead["reason"], dead["source"]["offset"]) == ("unreadable", 4)


def test_a_mixed_body_validated_at_once_gives_each_record_its_own_fate() -> None:
    normalizer = Normalizer(KEY, lambda: NOW, timedelta(hours=1))
    items: list[object] = [
        make_cdr("a"),
        make_cdr("b", ended_at="2026-03-02T09:00:00+01:00"),  # before originated_at
        42,
        make_cdr("c", callee_number="+39000"),
        make_cdr("d", originated_at="yesterday", sip_code=1),
        make_cdr("a"),  # a repeat of the first
        UnreadableRecord("line 7 is not valid JSON"),
        {k: v for k, v in make_cdr("e").items() if k != "campaign_id"},
        make_cdr("f", campaign_id="other", extra={"deep": {"a": {"b": {"c": 1}}}}),
        make_cdr("g", campaign_id="other"),
    ]

    outcome = validate_items(items, normalizer, source="http")

    alone = [check_item(item, normalizer, source="http") for item in items]
    expected = [
        (index, errors) for index, (errors, _reason, record, _v) in enumerate(alone) if not record
    ]
    assert [(r.index, r.errors) for r in outcome.rejected] == expected
    assert [index for index, _ in expected] == [1, 2, 3, 4, 6, 7, 8]
    assert [r.call_id for r in outcome.good] == ["a", "g"]
    assert outcome.good == [alone[0][2], alone[9][2]]
    assert outcome.duplicates == 1
    assert outcome.encoded == [(b"energia-primavera", alone[0][3]), (b"other", alone[9][3])]
