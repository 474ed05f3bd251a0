"""Time from a breaching CDR's acceptance to its alert in the API, under background load.

SPEC "Quality bars": p99 under 2 s from the breaching CDR's acceptance (the 202 of its
POST) to the alert visible in the API, at 10,000 CDR/s. Runs the whole stack as
`python -m services.cli up` does (embedded Tansu broker, ingest, detector, api; SQLite),
drives background dialer traffic at `--rate` from a separate process
(bench/_load_generator.py), then, `--probes` times, makes a fresh campaign breach the
`it` 3 % cumulative silent-call cap with one batch (110 calls answered by a person, 6 of
them silent) and polls `GET /v1/alerts?campaign_id=...&rule=it-silent-rate-cumulative`
every 20 ms until the violation shows.

Everything shares the machine's 2 cores: broker, three services, the load generator and
this client. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from _common import (
    ROOT,
    BenchError,
    Child,
    Stack,
    callee_numbers,
    clean_env,
    emit_json,
    fmt_int,
    ms,
    percentile,
    print_header,
    recent_weekday,
    run_main,
    start_stack,
    up_child,
    work_dir,
)

from schemas import topics
from schemas.record_batch_v1 import records_in

RULE = "it-silent-rate-cumulative"
# The detector keeps up when the newest CDR of its last batch was accepted this recently.
STEADY_LAG_SECONDS = 1.0
ANSWERED, SILENT = 110, 6  # 6 / 110 = 5.5 % > 3 %, sample 110 >= 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python bench/alert_latency.py --rate 2000 --probes 30",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10_000.0,
        help="background CDR/s (default 10000: the SPEC bar's load)",
    )
    parser.add_argument("--probes", type=int, default=20, help="breaching campaigns (default 20)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before probing (default 5)"
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for one alert before counting a timeout (default 30)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=150.0,
        help="stop probing after this long, or after 3 timeouts in a row (default 150)",
    )
    parser.add_argument("--poll", type=float, default=0.02, help="poll interval s (default 0.02)")
    parser.add_argument("--seed", type=int, default=3, help="traffic seed (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (table on stderr)"
    )
    return parser.parse_args(argv)


def breaching_batch(campaign: str, event_time: datetime, rng: random.Random) -> bytes:
    """One batch that puts a fresh campaign over the Italian 3 % silent-call cap."""
    numbers = callee_numbers(ANSWERED, rng)
    records = []
    for i, (number, country) in enumerate(numbers):
        originated = event_time - timedelta(seconds=rng.uniform(30, 90))
        answered = originated + timedelta(seconds=rng.uniform(4, 20))
        record = {
            "call_id": f"{campaign}-{i}",
            "campaign_id": campaign,
            "callee_number": number,
            "originated_at": originated.isoformat(),
            "answered_at": answered.isoformat(),
            "amd_result": "human",
        }
        if country:
            record["callee_country"] = country
        if i < SILENT:
            record["ended_at"] = (answered + timedelta(seconds=2)).isoformat()
            record["hangup_side"] = "system"
        else:
            agent = answered + timedelta(seconds=rng.uniform(0.2, 1.5))
            record["agent_connected_at"] = agent.isoformat()
            record["ended_at"] = (agent + timedelta(seconds=rng.uniform(30, 200))).isoformat()
        records.append(record)
    return orjson.dumps(records)


@dataclass
class Probes:
    latencies: list[float] = field(default_factory=list)
    to_kafka: list[float] = field(default_factory=list)
    post_seconds: list[float] = field(default_factory=list)
    timeouts: int = 0
    consecutive_timeouts: int = 0
    stopped_early: str = ""
    failures: list[str] = field(default_factory=list)


async def probe_all(args: argparse.Namespace, stack: Stack, event_start: datetime) -> Probes:
    rng = random.Random(args.seed + 1)
    probes = Probes()
    run_id = uuid.uuid4().hex[:6]
    started = time.monotonic()
    ingest = httpx.AsyncClient(
        base_url=stack.ingest_url,
        headers={
            "Authorization": f"Bearer {stack.tokens['ingest']}",
            "Content-Type": "application/json",
        },
        timeout=30.0,
    )
    api = httpx.AsyncClient(
        base_url=stack.api_url,
        headers={"Authorization": f"Bearer {stack.tokens['viewer']}"},
        timeout=10.0,
    )
    watcher = AlertWatcher(stack.bootstrap)
    await watcher.start()
    async with ingest, api:
        for i in range(args.probes):
            if time.monotonic() - started > args.max_seconds or probes.consecutive_timeouts >= 3:
                probes.stopped_early = f"stopped after {i} probes: " + (
                    "3 timeouts in a row" if probes.consecutive_timeouts >= 3 else "--max-seconds"
                )
                break
            campaign = f"latency-{run_id}-{i:03d}"
            event_time = event_start + timedelta(seconds=time.monotonic() - started)
            body = breaching_batch(campaign, event_time, rng)
            sent = time.perf_counter()
            response = await ingest.post("/v1/cdrs", content=body)
            accepted = time.perf_counter()
            if response.status_code != 202:
                probes.failures.append(f"{campaign}: POST {response.status_code}")
                continue
            probes.post_seconds.append(accepted - sent)
            seen = await wait_for_violation(api, campaign, args)
            probes.consecutive_timeouts = probes.consecutive_timeouts + 1 if seen is None else 0
            if seen is None:
                probes.timeouts += 1
            else:
                probes.latencies.append(seen - accepted)
                on_kafka = await watcher.wait_for(campaign, timeout=2.0)
                if on_kafka is not None:
                    probes.to_kafka.append(on_kafka - accepted)
            print(
                f"  probe {i + 1:>3}/{args.probes}  "
                + (f"{(seen - accepted) * 1000:7.0f} ms" if seen else "timeout"),
                flush=True,
            )
            await asyncio.sleep(rng.uniform(0.2, 0.6))
    await watcher.stop()
    return probes


class AlertWatcher:
    """Notes when each campaign's violation of RULE first appears on cdrwatch.alerts.v1,
    to tell the detector's share of the latency from the api's."""

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaConsumer

        # A short fetch wait: the embedded broker answers a waiting fetch late (up to about
        # half its wait), which would count towards the detector's share.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
        )
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(topics.ALERTS)
        if not partitions:
            await self.consumer.topics()  # refresh metadata once
            partitions = self.consumer.partitions_for_topic(topics.ALERTS) or set()
        assigned = [TopicPartition(topics.ALERTS, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self.consumer.position(tp)  # resolve now: nothing published later is missed
        self._task = asyncio.create_task(self._run())

    async def wait_for(self, campaign: str, timeout: float) -> float | None:
        """When the campaign's violation was seen on the topic (it may be read after the api
        already showed it), None if not within `timeout`."""
        deadline = time.perf_counter() + timeout
        while campaign not in self.seen and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        return self.seen.get(campaign)

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    for alert, _headers in records_in(message.value):  # envelopes too
                        if alert.get("rule") == RULE and alert.get("severity") == "violation":
                            self.seen.setdefault(alert["campaign_id"], now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


async def wait_for_violation(
    api: httpx.AsyncClient, campaign: str, args: argparse.Namespace
) -> float | None:
    """perf_counter() at the first answer listing the firing violation, None on timeout."""
    deadline = time.perf_counter() + args.probe_timeout
    params = {"campaign_id": campaign, "rule": RULE}
    while time.perf_counter() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = await api.get("/v1/alerts", params=params)
            if response.status_code == 200:
                items = orjson.loads(response.content)["items"]
                if any(a["severity"] == "violation" and a["state"] == "firing" for a in items):
                    return time.perf_counter()
        await asyncio.sleep(args.poll)
    return None


def detector_figures(metrics_url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(metrics_url, headers={"Accept-Encoding": "identity"}, timeout=5).text
        for line in text.splitlines():
            if line.startswith(("cdrwatch_detector_cdrs_processed_total", "cdrwatch_detector_lag")):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
    return values


def wait_detector_processing(metrics_url: str, load: Child, timeout: float = 90.0) -> None:
    """Until the detector has processed some of the load (its group join is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not load.alive():
            raise BenchError(f"load generator exited:\n{load.log_tail()}")
        if detector_figures(metrics_url).get("cdrwatch_detector_cdrs_processed_total", 0) > 0:
            return
        time.sleep(0.2)
    raise BenchError(f"the detector processed nothing in {timeout:.0f} s")


def wait_steady(metrics_url: str, load: Child, timeout: float = 30.0) -> tuple[float, float]:
    """Until the detector keeps up with the load (its lag under `STEADY_LAG_SECONDS`) or
    `timeout` passed: (seconds waited, its lag then). The bar is for a sustained load, so
    the probes start once the stack's start-up backlog is worked off; a detector that
    cannot keep up is probed anyway, and its lag is printed."""
    started = time.monotonic()
    lag = float("nan")
    while time.monotonic() - started < timeout:
        if not load.alive():
            raise BenchError(f"load generator exited:\n{load.log_tail()}")
        lag = detector_figures(metrics_url).get("cdrwatch_detector_lag_seconds", float("nan"))
        if lag < STEADY_LAG_SECONDS:
            break
        time.sleep(0.5)
    return time.monotonic() - started, lag


def body(args: argparse.Namespace) -> None:
    print_header(
        "alert_latency",
        ("faust-streaming", "aiokafka", "fastapi", "uvicorn", "sqlalchemy", "httpx"),
        {
            "rate": args.rate,
            "probes": args.probes,
            "warmup": args.warmup,
            "poll": args.poll,
            "seed": args.seed,
        },
    )
    # Event time: a recent working afternoon, moving at wall-clock speed, so that the
    # calling-hours rules judge the same hours whatever day this runs.
    event_start = recent_weekday(datetime.now(UTC), 16, 30)
    with work_dir(args.keep) as work:
        up = up_child(work)
        load: Child | None = None
        summary: list[str] = []
        try:
            started = time.monotonic()
            up.start()
            stack = start_stack(up)
            print(f"stack     up in {time.monotonic() - started:.1f} s ({stack.api_url})")
            load = Child(
                "load",
                [
                    sys.executable,
                    str(ROOT / "bench" / "_load_generator.py"),
                    "--url",
                    stack.ingest_url,
                    "--token",
                    stack.tokens["ingest"],
                    "--rate",
                    str(args.rate),
                    "--event-start",
                    event_start.isoformat(),
                    "--seed",
                    str(args.seed),
                    "--seconds",
                    str(args.warmup + args.max_seconds + args.probe_timeout + 60),
                ],
                clean_env(),
                work,
                pipe_stdout=True,
            ).start()
            wait_detector_processing(stack.metrics_url, load)
            print(f"load      {fmt_int(args.rate)} CDR/s target; {args.warmup:g} s warm-up ...")
            time.sleep(args.warmup)
            waited, lag = wait_steady(stack.metrics_url, load)
            print(f"steady    detector lag {lag:.1f} s after {waited:.1f} s more")
            before = (time.monotonic(), detector_figures(stack.metrics_url))
            probes = asyncio.run(probe_all(args, stack, event_start))
            after = (time.monotonic(), detector_figures(stack.metrics_url))
            summary = load.finish(timeout=40).strip().splitlines()[-1:]
        finally:
            if load is not None:
                load.stop(timeout=40)
            up.stop(timeout=60)
    report(args, probes, summary[0] if summary else None, before, after)


def report(
    args: argparse.Namespace,
    probes: Probes,
    summary: str | None,
    before: tuple[float, dict[str, float]],
    after: tuple[float, dict[str, float]],
) -> None:
    # A probe that timed out counts as an infinite latency: percentiles over the answered
    # probes only would flatter an overloaded stack.
    lat = sorted(probes.latencies + [math.inf] * probes.timeouts)
    figures: dict[str, object] = {
        "probes": args.probes,
        "timeouts": probes.timeouts,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p95_ms": percentile(lat, 0.95) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "post_p50_ms": percentile(sorted(probes.post_seconds), 0.5) * 1000,
    }
    kafka = sorted(probes.to_kafka)
    figures["to_kafka_p50_ms"] = percentile(kafka, 0.50) * 1000
    figures["to_kafka_p99_ms"] = percentile(kafka, 0.99) * 1000
    load = orjson.loads(summary) if summary else {}
    figures["target_rate"] = args.rate
    figures["achieved_rate"] = load.get("rate")
    print()
    print(
        f"  alert latency  p50 {ms(figures['p50_ms'])}   p95 {ms(figures['p95_ms'])}   "
        f"p99 {ms(figures['p99_ms'])}   max {ms(figures['max_ms'])}   "
        f"({len(probes.latencies)} of {len(probes.latencies) + probes.timeouts} probes "
        "answered; timeouts "
        f"{probes.timeouts}, at {args.probe_timeout:g} s)"
    )
    print(
        f"  of which       202 to the alert on {topics.ALERTS}: p50 "
        f"{ms(figures['to_kafka_p50_ms'])}, p99 {ms(figures['to_kafka_p99_ms'])} "
        f"({len(kafka)} seen; ingest + detector); the rest is the api (consume, store, answer)"
    )
    print(f"  breaching POST p50 {ms(figures['post_p50_ms'])} (110 CDRs, until the 202)")
    if load:
        print(
            f"  background     target {fmt_int(args.rate)} CDR/s, achieved "
            f"{fmt_int(load['rate'])} CDR/s ({fmt_int(load['accepted'])} accepted of "
            f"{fmt_int(load['sent'])} sent in {load['seconds']:.0f} s; answers {load['statuses']})"
        )
    else:
        print("  background     the load generator reported nothing")
    processed = "cdrwatch_detector_cdrs_processed_total"
    lag = after[1].get("cdrwatch_detector_lag_seconds", float("nan"))
    if processed in before[1] and processed in after[1]:
        rate = (after[1][processed] - before[1][processed]) / (after[0] - before[0])
        figures["detector_rate"] = rate
        figures["detector_lag_s"] = lag
        print(
            f"  detector       {fmt_int(rate)} CDR/s processed while probing; lag at the end "
            f"{lag:.1f} s (ingest acceptance to detector, newest CDR of its last batch)"
        )
    for failure in probes.failures:
        print(f"  failed probe   {failure}")
    if probes.stopped_early:
        print(f"  probing        {probes.stopped_early}")
    print(
        f"  SPEC bar       p99 < 2,000 ms at 10,000 CDR/s: p99 {ms(figures['p99_ms'])} at "
        f"{fmt_int(load.get('rate', 0))} CDR/s"
    )
    if args.json:
        emit_json({"benchmark": "alert_latency", **figures})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args.json, lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
