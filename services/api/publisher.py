"""Publishes campaign configurations to `cdrwatch.campaigns.v1`, which the detector reads
as a table (the newest record per key wins; the topic is meant to be compacted).

Record: key = the scoped key `tenant_id/campaign_id` (UTF-8; a campaign is a (tenant,
campaign) pair, and ids contain no `/`); value = JSON
`{"campaign_id", "profile", "overrides", "amd_false_positive_ratio", "tenant_id",
"updated_at"}` with `profile` null for the detector's default profile and `updated_at`
RFC 3339 UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import topics
from services.api.models import CampaignConfig
from services.common.archive import Archive, ArchiveError
from services.common.kafka import create_producer
from services.common.settings import ApiSettings


class PublishUnavailable(Exception):
    """The broker did not acknowledge the record; nothing was applied."""


class CampaignPublisher(Protocol):
    async def publish(self, config: CampaignConfig) -> None: ...


def campaign_record(config: CampaignConfig) -> tuple[bytes, bytes]:
    """Kafka key (the scoped key) and value of a campaign configuration."""
    key = f"{config.tenant_id or ''}/{config.campaign_id}"
    return key.encode(), orjson.dumps(config.model_dump(mode="json"))


class KafkaCampaignPublisher:
    """Connects on first use (so the api starts without a broker) and reconnects after a
    failure; every failure is a PublishUnavailable."""

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, config: CampaignConfig) -> None:
        key, value = campaign_record(config)
        try:
            async with asyncio.timeout(self._settings.send_timeout_seconds):
                producer = await self._connected()
                await producer.send_and_wait(topics.CAMPAIGNS, value=value, key=key)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.stop()
            raise PublishUnavailable(f"broker did not acknowledge: {exc!r}") from exc

    async def _connected(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = create_producer(self._settings, client_id="cdrwatch-api")
                try:
                    await producer.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


class ArchivingCampaignPublisher:
    """Keeps every configuration the broker acknowledged in the durable archive
    (services.common.archive), so `cdrwatch up` replays it into a fresh broker.

    Archived after the broker's acknowledgement: when the archive cannot be written the
    PUT fails (PublishUnavailable, 503) and the store keeps the old configuration; the
    detector may already apply the new one, and the client's retry (a PUT is idempotent)
    brings the three into line."""

    def __init__(self, inner: CampaignPublisher, archive: Archive) -> None:
        self.inner = inner
        self.archive = archive

    async def publish(self, config: CampaignConfig) -> None:
        await self.inner.publish(config)
        try:
            await asyncio.to_thread(self.archive.put_setting, *campaign_record(config))
        except ArchiveError as exc:
            raise PublishUnavailable(f"the archive could not be written: {exc}") from exc

    async def stop(self) -> None:
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            await stop()
