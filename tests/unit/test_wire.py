"""The detector's wire (services.detector.wire): callee partitions as a keyed Kafka send
picks them, and every message it writes held to its model in schemas/."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from schemas.detector_v1 import CalleeBatchV1, DeadLetterV1, LockoutViolationV1
from schemas.instants import format_instant
from services.api.models import CampaignConfig as ApiCampaignConfig
from services.api.publisher import campaign_record
from services.detector.core.lockouts import CalleeCall, LockoutViolation, to_json
from services.detector.core.model import BucketCounts
from services.detector.wire import (
    CalleePartitions,
    callee_batches,
    callee_entries,
    dead_letter_body,
    murmur2,
    read_settings,
    read_violation,
    stats_body,
    violation_body,
)


def test_murmur2_equals_the_kafka_clients_for_every_length_and_byte() -> None:
    # Every tail length (0-3 extra bytes), empty input, high bytes (sign bits in Java).
    rng = random.Random(7)
    samples = [b"", b"\x00", b"\xff" * 3, b"\x80" * 4, b"tenant-b/0123456789abcdef"]
    samples += [rng.randbytes(rng.randrange(0, 90)) for _ in range(5000)]
    for data in samples:
        assert murmur2(data) == aiokafka_murmur2(data), data


def test_callee_partitions_are_those_of_a_keyed_send() -> None:
    # The callee table is co-partitioned with the topic: a partition that moved would put
    # a callee's calls where its history is not.
    rng = random.Random(11)
    partitioner = DefaultPartitioner()
    for count in (1, 4, 7, 12):
        partitions = list(range(count))
        of = CalleePartitions(count)
        for _ in range(500):
            key = f"tenant-{rng.randrange(3)}/{rng.randbytes(16).hex()}"
            assert of(key) == partitioner(key.encode(), partitions, partitions)


# -- every message the detector writes parses as its model in schemas/ ---------------------

T0 = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)


def test_a_lockout_violation_round_trips_through_its_model() -> None:
    violation = LockoutViolation(
        rule_id="uk-silent-lockout",
        call_id="c-2",
        campaign_id="tenant-a/camp",
        originated_at=T0,
        trigger_call_id="c-1",
    )
    body = violation_body(violation)
    assert LockoutViolationV1.model_validate_json(body).originated_at == T0
    assert read_violation(body) == violation
    frequency = replace(violation, trigger_call_id=None)
    assert read_violation(violation_body(frequency)) == frequency


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"campaign_id": "camp"}, "campaign_id"),  # not scoped tenant/campaign
        ({"originated_at": "yesterday"}, "originated_at"),
        ({"rule_id": None}, "rule_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_lockout_violation_names_its_field(change: dict[str, Any], field: str) -> None:
    good = orjson.loads(
        violation_body(LockoutViolation("r", "c", "t/camp", T0, None)),
    )
    with pytest.raises(ValueError, match=field):
        read_violation(orjson.dumps({**good, **change}))


def test_callee_envelopes_are_the_model_and_read_back() -> None:
    calls = [
        (
            f"t\x1fkey-{i % 7}",
            CalleeCall(f"c{i}", "t/camp", T0, bool(i % 2), frozenset({"silent"} if i % 3 else ())),
            False,
        )
        for i in range(50)
    ]
    read: list[tuple[str, Any]] = []
    for _partition, _replayed, value in callee_batches(calls, CalleePartitions(4)):
        CalleeBatchV1.model_validate_json(value)
        read.extend(callee_entries(None, value))
    assert sorted(read) == sorted((key, row) for key, call, _ in calls for row in to_json([call]))


def test_dead_letters_are_the_model() -> None:
    for value in (b'{"call_id": "c"}', b"\xff not json", None):
        body = dead_letter_body(
            value, topic="t", partition=1, offset=2, reason="unprocessable", detail="d", stage="cdr"
        )
        letter = DeadLetterV1.model_validate_json(body)
        assert (letter.source.partition, letter.source.offset, letter.stage) == (1, 2, "cdr")


def test_the_api_s_campaign_records_are_the_settings_the_detector_reads() -> None:
    config = ApiCampaignConfig(
        campaign_id="camp",
        profile="uk",
        overrides={"silent_cap": 0.02},
        amd_false_positive_ratio=0.25,
        tenant_id="tenant-a",
        updated_at=T0,
    )
    _key, value = campaign_record(config)
    settings = read_settings(value)
    assert settings.model_dump() == config.model_dump()
    # A record written by hand, without the api's `updated_at`, is read too.
    assert read_settings(b'{"campaign_id": "a", "profile": "it"}').profile == "it"
    with pytest.raises(ValueError, match="amd_false_positive_ratio"):
        read_settings(b'{"campaign_id": "a", "amd_false_positive_ratio": 2}')


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2026, 3, 2, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 9, 1, tzinfo=UTC)),
        (  # a US period boundary: the first call's exact instant
            datetime(2026, 1, 10, 15, 30, 20, 250000, tzinfo=UTC),
            datetime(2026, 2, 9, 15, 30, 20, 250000, tzinfo=UTC),
        ),
        (  # a calendar day in Rome, as its zone gives it: written in UTC
            datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Rome")),
            datetime(2026, 3, 30, 0, 0, tzinfo=ZoneInfo("Europe/Rome")),
        ),
        (
            datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("UTC")),
            datetime(2026, 3, 2, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5))),
        ),
    ],
    ids=["minute", "microseconds", "zone", "other-utc-and-offset"],
)
def test_stats_are_written_with_the_instants_of_format_instant(
    start: datetime, end: datetime
) -> None:
    """The stats encoder lets orjson write the instants; the bytes are those written with
    `format_instant` (RFC 3339 in UTC, a trailing Z, microseconds only when present)."""
    counts = BucketCounts(200, 160, 150, 3, 5, 7, 2, 1)
    expected = orjson.dumps(
        {
            "campaign_id": "c",
            "tenant_id": "t",
            "from": format_instant(start),
            "to": format_instant(end),
            **counts.as_dict(),
            "silent_rate": 5 / 150,
            "abandoned_rate": 7 / 150,
            "out_of_hours_rate": 2 / 200,
        }
    )
    assert stats_body("c", start, end, counts, tenant_id="t") == expected
