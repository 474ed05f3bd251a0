"""Replay the durable archive (services.common.archive) into a fresh broker.

`cdrwatch up` calls it after it started (or restarted) the embedded broker and created
the topics, before the detector starts: first the campaign settings (the newest per key,
to `cdrwatch.campaigns.v1`), so that every CDR is classified under its campaign's profile,
then every archived record (envelopes of CDRs) in publish order to `cdrwatch.cdrs.v1`,
`batch_size` records at a time, each batch acknowledged (acks=all) before the next is read.

Every replayed record carries the header `cdrwatch-replay: 1` (CONTRACT decision 4): the
detector marks what it derives from them, and the api neither notifies again nor rewrites
the history, opened_at, acknowledgement or note of an alert it already holds. Repeats in
the archive (a batch the client sent twice) are counted once by the detector's dedup on
(tenant, call_id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.cdr_batch_v1 import count_cdrs
from services.common.archive import Archive
from services.common.kafka import create_producer
from services.common.settings import CommonSettings

log = logging.getLogger(__name__)

REPLAY_HEADERS = [(topics.HEADER_REPLAY, b"1")]
DEFAULT_BATCH_SIZE = 5000


@dataclass(frozen=True, slots=True)
class ReplayResult:
    settings: int
    cdrs: int
    seconds: float


async def _send_all(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    futures = [
        await producer.send(topic, value=value, key=key, headers=REPLAY_HEADERS)
        for key, value in records
    ]
    await asyncio.gather(*futures)  # the first refusal raises: the replay failed


async def replay_archive(
    archive: Archive,
    settings: CommonSettings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ReplayResult:
    """Publish the archive to the broker of `settings`; raises the broker's error when a
    record is not acknowledged (the caller restarts the recovery)."""
    started = time.monotonic()
    producer = create_producer(settings, client_id="cdrwatch-replay")
    await producer.start()
    try:
        configs = await asyncio.to_thread(archive.settings)
        if configs:
            await _send_all(producer, topics.CAMPAIGNS, list(configs))
        count = 0
        batches = archive.cdr_batches(batch_size)
        while True:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            await _send_all(producer, topics.CDRS, [(key, value) for _, key, value in batch])
            count += sum(count_cdrs(value) for _, _key, value in batch)
    finally:
        await producer.stop()
    result = ReplayResult(len(configs), count, time.monotonic() - started)
    log.info(
        "archive_replayed",
        extra={
            "settings": result.settings,
            "cdrs": result.cdrs,
            "seconds": round(result.seconds, 2),
        },
    )
    return result
