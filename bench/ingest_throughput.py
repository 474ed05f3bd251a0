"""CDR/s accepted by one ingest process for 1,000-record batches, and request latency.

SPEC "Quality bars": at least 50,000 CDR/s per ingest process for batches of 1,000
records (202 only after the broker acknowledged, acks=all), p99 request under 250 ms.
One fresh embedded broker, ONE `python -m services.cli ingest` process and an ingest
token from `python -m services.cli token create --role ingest`; this process is the
client: httpx with K concurrent keep-alive connections posts pre-built JSON batches of
realistic dialer CDRs (Italian, UK and US numbers, many distinct) for a fixed time after
a short warm-up. The batches are sent round-robin: ingest does not deduplicate across
requests (the detector does), so repeating a body costs it the same as a new one, except
that its callee-number cache (65,536 numbers) may already hold some numbers.

The client shares the machine's 2 cores with the server and the broker: the figures are
a floor for what one ingest process can do. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from _common import (
    ROOT,
    BenchError,
    Child,
    Profiler,
    clean_env,
    cpu_seconds,
    dialer_traffic,
    embedded_broker,
    emit_json,
    fmt_int,
    ms,
    percentile,
    print_header,
    profile_summary,
    python_module,
    recent_weekday,
    run_main,
    wait_http_ok,
    work_dir,
)

from services.common.broker import free_port

PSEUDONYM_KEY = "bench-pseudonym-key-0123456789abcdef"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python bench/ingest_throughput.py --connections 8",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="measured posting time (default 20)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds posted before measuring (default 3)"
    )
    parser.add_argument(
        "--connections", type=int, default=4, help="concurrent connections K (default 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="records per request (default 1000)"
    )
    parser.add_argument(
        "--batches", type=int, default=100, help="distinct pre-built request bodies (default 100)"
    )
    parser.add_argument(
        "--numbers",
        type=int,
        default=200_000,
        help="callee numbers the records are drawn from (default 200000: more distinct "
        "numbers in the bodies than ingest's cache holds)",
    )
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    parser.add_argument("--seed", type=int, default=2, help="traffic seed (default 2)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the ingest process while it is measured and print its top "
        "functions (needs the bench extra)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (table on stderr)"
    )
    return parser.parse_args(argv)


def build_bodies(args: argparse.Namespace) -> list[bytes]:
    started = time.perf_counter()
    cdrs = dialer_traffic(
        args.batches * args.batch_size,
        seed=args.seed,
        campaigns=50,
        numbers=args.numbers,
        start=recent_weekday(datetime.now(UTC), 10),
        span=timedelta(hours=10),
        id_prefix=f"ingest-{uuid.uuid4().hex[:8]}",
    )
    distinct = len({c["callee_number"] for c in cdrs})
    bodies = [
        orjson.dumps(cdrs[i : i + args.batch_size]) for i in range(0, len(cdrs), args.batch_size)
    ]
    size = sum(len(b) for b in bodies) / len(bodies)
    print(
        f"input     {len(bodies)} bodies of {args.batch_size} CDRs ({size / 1024:,.0f} KiB "
        f"each), {fmt_int(distinct)} distinct callee numbers, 50 campaigns "
        f"(built in {time.perf_counter() - started:.1f} s)"
    )
    return bodies


def create_token(env: dict[str, str]) -> str:
    import subprocess

    try:
        out = subprocess.run(
            python_module("token", "create", "--role", "ingest"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"token create failed: {exc}") from exc
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Tally:
    """What the client saw during the measured window."""

    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    rejected_records: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


async def post_for(
    url: str, token: str, bodies: list[bytes], args: argparse.Namespace
) -> tuple[Tally, float]:
    """K connections post bodies back to back; requests that start after the warm-up and
    end before the deadline are counted. Returns the tally and the measured seconds."""
    tally = Tally()
    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    cycle = itertools.cycle(bodies)
    loop = asyncio.get_running_loop()
    begin = loop.time() + args.warmup
    end = begin + args.seconds

    async def connection(client: httpx.AsyncClient) -> None:
        while loop.time() < end:
            body = next(cycle)
            sent = loop.time()
            try:
                response = await client.post(url, content=body)
            except httpx.HTTPError as exc:
                status, answer = type(exc).__name__, None
            else:
                status, answer = str(response.status_code), response
            done = loop.time()
            if sent < begin or done > end:
                continue
            tally.latencies.append(done - sent)
            tally.statuses[status] += 1
            if answer is not None and answer.status_code in (202, 422):
                result = orjson.loads(answer.content)
                tally.accepted += result["accepted"]
                tally.rejected_records += len(result["rejected"])

    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30.0) as client:
        await asyncio.gather(*(connection(client) for _ in range(args.connections)))
    return tally, args.seconds


def body(args: argparse.Namespace) -> None:
    print_header(
        "ingest_throughput",
        ("fastapi", "uvicorn", "aiokafka", "pydantic", "phonenumbers", "httpx"),
        {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "connections": args.connections,
            "batch_size": args.batch_size,
            "partitions": args.partitions,
            "seed": args.seed,
        },
    )
    bodies = build_bodies(args)
    with work_dir(args.keep) as work, embedded_broker(work, args.partitions) as (bootstrap, pid):
        env = clean_env(
            CDRWATCH_KAFKA_BOOTSTRAP=bootstrap,
            CDRWATCH_KAFKA_IDEMPOTENCE="false",
            CDRWATCH_KAFKA_PARTITIONS=str(args.partitions),
            CDRWATCH_DATA_DIR=str(work / "data"),
            CDRWATCH_PSEUDONYM_KEY=PSEUDONYM_KEY,
            CDRWATCH_LOG_JSON="true",
        )
        token = create_token(env)
        port = free_port()
        ingest = Child("ingest", python_module("ingest", "--port", str(port)), env, work)
        profiler: Profiler | None = None
        try:
            ingest.start()
            base = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{base}/readyz", ingest)
            marks = [(cpu_seconds(ingest.pid), cpu_seconds(pid), time.process_time())]

            async def measure() -> tuple[Tally, float]:
                nonlocal profiler
                task = asyncio.create_task(post_for(f"{base}/v1/cdrs", token, bodies, args))
                await asyncio.sleep(args.warmup)
                marks[0] = (cpu_seconds(ingest.pid), cpu_seconds(pid), time.process_time())
                if args.profile:
                    profiler = Profiler(ingest.pid, work / "ingest.pyspy.txt").start()
                result = await task
                marks.append((cpu_seconds(ingest.pid), cpu_seconds(pid), time.process_time()))
                return result

            print(
                f"posting   {args.connections} connections, {args.warmup:g} s warm-up, "
                f"{args.seconds:g} s measured ...",
                flush=True,
            )
            tally, seconds = asyncio.run(measure())
        finally:
            if profiler is not None:
                profiler.stop()
            ingest.stop()
        report(args, tally, seconds, marks, profiler)


def report(
    args: argparse.Namespace,
    tally: Tally,
    seconds: float,
    marks: list[tuple[float, float, float]],
    profiler: Profiler | None,
) -> None:
    latencies = sorted(tally.latencies)
    requests = len(latencies)
    rate = tally.accepted / seconds
    errors = {s: n for s, n in tally.statuses.items() if s != "202"}
    (ingest0, broker0, client0), (ingest1, broker1, client1) = marks[0], marks[-1]
    figures = {
        "accepted_cdr_per_s": rate,
        "requests": requests,
        "requests_per_s": requests / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else float("nan"),
        "errors": errors,
        "rejected_records": tally.rejected_records,
        "ingest_cpu": (ingest1 - ingest0) / seconds,
        "broker_cpu": (broker1 - broker0) / seconds,
        "client_cpu": (client1 - client0) / seconds,
    }
    print()
    print(
        f"  accepted      {fmt_int(rate)} CDR/s   ({fmt_int(tally.accepted)} CDRs in "
        f"{fmt_int(requests)} requests, {requests / seconds:.1f} req/s, {seconds:g} s)"
    )
    print(
        f"  request       p50 {ms(figures['p50_ms'])}   p95 {ms(figures['p95_ms'])}   "
        f"p99 {ms(figures['p99_ms'])}   max {ms(figures['max_ms'])}"
    )
    shown = ", ".join(f"{s}: {n}" for s, n in sorted(errors.items())) or "none"
    print(f"  errors        {shown}; records rejected in 202 answers: {tally.rejected_records}")
    print(
        f"  CPU           ingest {figures['ingest_cpu']:.0%}, broker {figures['broker_cpu']:.0%}, "
        f"client {figures['client_cpu']:.0%} of one core"
    )
    print(
        "  note          the client, the broker and the server share the machine's "
        f"{len(os.sched_getaffinity(0))} cores"
    )
    print(
        f"  SPEC bar      >= 50,000 CDR/s per process: {rate / 50_000:.2f} of it; "
        f"p99 < 250 ms: p99 {ms(figures['p99_ms'])}"
    )
    if profiler is not None:
        print()
        print("\n".join(profile_summary(profiler.out)))
    if args.json:
        payload = {"benchmark": "ingest_throughput", **figures}
        emit_json(payload)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args.json, lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
