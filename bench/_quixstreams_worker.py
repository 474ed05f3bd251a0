"""A quixstreams app for bench/detector_throughput.py: a 1-minute tumbling-window count
per campaign (the message key) in event time (`originated_at`), RocksDB state with its
change log, at-least-once. Runs in its own virtual environment (quixstreams pins a
pydantic older than cdrwatch's), so it imports nothing of cdrwatch.

An envelope (schemas.cdr_batch_v1) is expanded into its CDRs, each windowed by its own
`originated_at`. Prints {"event": "first"} at the first record and, when `--expect` CDRs
were read,
{"count": N, "seconds": S, "updates": U}: S from the first record to the last, U the
window updates emitted.
Run by the benchmark, not by hand: `python bench/_quixstreams_worker.py --help`.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import datetime
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.models import TopicConfig


def originated_ms(value: Any, _headers: Any, _timestamp: int, _kind: Any) -> int:
    """The message's event time: its CDR's, or an envelope's first CDR's (each CDR then
    gets its own, `cdr_originated_ms`)."""
    if isinstance(value, dict) and "cdrs" in value:
        value = value["cdrs"][0]
    return int(datetime.fromisoformat(value["originated_at"]).timestamp() * 1000)


def cdrs_of(value: Any) -> list[Any]:
    """The CDRs of one message: an envelope's `cdrs` (schemas.cdr_batch_v1), else itself."""
    return value["cdrs"] if isinstance(value, dict) and "cdrs" in value else [value]


def cdr_originated_ms(value: Any, _key: Any, _timestamp: int, _headers: Any) -> int:
    return int(datetime.fromisoformat(value["originated_at"]).timestamp() * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--topic", default="cdrwatch.cdrs.v1")
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel=logging.WARNING,
        processing_guarantee="at-least-once",
    )
    topic = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=originated_ms,
    )
    broker_config = topic.broker_config
    if "retention.ms" not in broker_config.extra_config:
        # Tansu's DescribeConfigs leaves out retention.ms, from which quixstreams derives
        # the change log's: say what the in-memory broker does (keep everything).
        topic.broker_config = TopicConfig(
            num_partitions=broker_config.num_partitions,
            replication_factor=broker_config.replication_factor,
            extra_config={**broker_config.extra_config, "retention.ms": "-1"},
        )
    progress = {"count": 0, "first": 0.0, "updates": 0}

    def counted(_value: Any) -> None:
        progress["count"] += 1
        if progress["count"] == 1:
            progress["first"] = time.perf_counter()
            print('{"event": "first"}', flush=True)
        elif progress["count"] == args.expect:
            seconds = time.perf_counter() - progress["first"]
            line = {"count": args.expect, "seconds": seconds, "updates": progress["updates"]}
            print(orjson.dumps(line).decode(), flush=True)
            app.stop()

    def window_updated(_window: Any) -> None:
        progress["updates"] += 1

    sdf = app.dataframe(topic)
    sdf = sdf.apply(cdrs_of, expand=True)
    sdf = sdf.set_timestamp(cdr_originated_ms)
    sdf = sdf.update(counted)
    # Grace of a minute: dialers push calls as they end, not in originated_at order.
    sdf = sdf.tumbling_window(duration_ms=60_000, grace_ms=60_000).count().current()
    sdf = sdf.update(window_updated)
    app.run()


if __name__ == "__main__":
    main()
