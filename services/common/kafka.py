"""Kafka client factory: producer configuration and topic creation, shared by the services.

Producers use acks=all. The idempotent producer is a setting (`kafka_idempotence`): on for
Apache Kafka, off for the embedded Tansu broker, which answers InitProducerId with an
error. Records are deduplicated by `call_id` downstream, so producer retries are absorbed
either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code

from schemas import topics as topic_names
from services.common.settings import CommonSettings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36

# Per-topic settings at creation. Campaign configuration is a table (latest per campaign).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    topic_names.CAMPAIGNS: {"cleanup.policy": "compact"},
}


def producer_config(settings: CommonSettings, client_id: str = "cdrwatch") -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`.

    A short linger batches the records of one HTTP request per partition without adding
    noticeable latency; no compression (CDRs are small and the broker may be Tansu).
    """
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "linger_ms": 5,
        "compression_type": None,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }


def create_producer(settings: CommonSettings, client_id: str = "cdrwatch") -> AIOKafkaProducer:
    """A configured, not yet started producer (call it inside the running event loop)."""
    return AIOKafkaProducer(**producer_config(settings, client_id))


async def ensure_topics(
    bootstrap: str,
    partitions: int,
    topics: Iterable[str] = topic_names.ALL,
    *,
    replication_factor: int = 1,
    timeout_seconds: float = 30.0,
) -> None:
    """Create the missing topics; existing ones are left as they are (idempotent).

    Retries the connection until `timeout_seconds` so that it can run right after a broker
    was started. A topic created concurrently by someone else counts as success.
    """
    wanted = list(dict.fromkeys(topics))
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdrwatch-admin")
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if missing:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions,
                            replication_factor,
                            topic_configs=TOPIC_CONFIGS.get(name, {}),
                        )
                        for name in missing
                    ]
                )
                _raise_topic_errors(response.topic_errors)
                log.info("topics_created", extra={"topics": missing, "partitions": partitions})
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def _raise_topic_errors(topic_errors: Iterable[tuple[Any, ...]]) -> None:
    """Raise the first real error of a CreateTopics response (TopicAlreadyExists is fine)."""
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        error_class: type[KafkaError] = for_code(code)
        raise error_class(f"creating topic {name}: {message}".rstrip(": "))
