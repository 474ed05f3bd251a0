"""A bare faust agent for bench/detector_throughput.py: reads cdrwatch.cdrs.v1 and only
parses each value with orjson, counting the CDRs it holds (an envelope's `cdrs`, else one:
the detector's input, schemas.cdr_batch_v1). Same broker settings as the detector (session timeout
10 s, earliest offsets, raw serializers, web server off).

Prints {"event": "first"} at the first record and, when `--expect` CDRs were parsed,
{"count": N, "seconds": S} where S runs from the first record parsed to the last.
Run by the benchmark, not by hand: `python bench/_bare_faust_worker.py --help`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import faust
import orjson
from _common import ROOT  # noqa: F401 - puts this checkout first on sys.path

from schemas import topics


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.app_id,
        broker=";".join(f"kafka://{h}" for h in args.bootstrap.split(",")),
        store="memory://",
        web_enabled=False,
        datadir=args.data_dir,
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    topic = app.topic(topics.CDRS, key_serializer="raw", value_serializer="raw")
    progress = {"count": 0, "first": 0.0}

    def parsed(value: bytes) -> None:
        data = orjson.loads(value)
        first = progress["count"] == 0
        progress["count"] += len(data["cdrs"]) if isinstance(data, dict) and "cdrs" in data else 1
        if first:
            progress["first"] = time.perf_counter()
            print('{"event": "first"}', flush=True)
        if progress["count"] == args.expect:
            seconds = time.perf_counter() - progress["first"]
            print(orjson.dumps({"count": args.expect, "seconds": seconds}).decode(), flush=True)

    if args.batch:

        @app.agent(topic, name="bench-bare-parse")
        async def parse_batches(stream: Any) -> None:
            async for values in stream.take(args.batch, within=0.05):
                for value in values:
                    parsed(value)

    else:

        @app.agent(topic, name="bench-bare-parse")
        async def parse(stream: Any) -> None:
            async for value in stream:
                parsed(value)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument(
        "--batch", type=int, default=0, help="take() batches of this size (0: per event)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = faust.Worker(build_app(args), loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
