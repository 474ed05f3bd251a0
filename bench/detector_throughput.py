"""CDR/s through the detector beside a bare faust agent and a quixstreams windowed count.

SPEC "Quality bars": the detector with all rules and dedup on reaches at least 0.8 x the
throughput of a bare faust agent that only parses, and at least 2 x quixstreams' windowed
count, measured in one run. One fresh embedded broker; N normalised CDRs (the ingest
service's own normalisation of realistic dialer traffic) are produced to
cdrwatch.cdrs.v1 first; then each engine, with its own consumer group, reads them all
from offset 0, one engine at a time:

- cdrwatch detector: `python -m services.cli detector` (its own app id), timed from the
  start of its first batch to its last through `cdrwatch_detector_cdrs_processed_total`
  and `cdrwatch_detector_batch_seconds`, until its per-callee stage has drained too; with
  `--split` also its two stages in two processes, as `cdrwatch up` runs them;
- bare faust agent: bench/_bare_faust_worker.py, orjson.loads of each value, per event
  and in take() batches;
- quixstreams: bench/_quixstreams_worker.py, a 1-minute tumbling-window count per
  campaign, run with the interpreter of .venv/quixstreams (see bench/README.md).

Start-up (group join, first fetch) is excluded everywhere. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
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
    normalized_records,
    print_header,
    profile_summary,
    python_module,
    recent_weekday,
    rss_mib,
    run_main,
    work_dir,
)

from schemas import topics
from schemas.cdr_batch_v1 import envelopes
from services.common.broker import free_port

DEFAULT_QUIX_PYTHON = ROOT / ".venv" / "quixstreams" / "bin" / "python"
PROCESSED = "cdrwatch_detector_cdrs_processed_total"
BATCH_SECONDS = "cdrwatch_detector_batch_seconds_sum"


@dataclass
class Result:
    engine: str
    cdrs: int
    seconds: float
    engine_cpu: float  # share of one core, over the measured interval
    broker_cpu: float
    note: str = ""
    output: str = ""
    profile: list[str] = field(default_factory=list)
    # The detector's own count of what it read (its metrics at the end), for the ledger
    # check of `make bench`: processed + duplicates + rejected against the records sent.
    counted: dict[str, float] = field(default_factory=dict)
    timed_out: bool = False  # its figures then cover part of the work: no rate to report

    @property
    def rate(self) -> float:
        return self.cdrs / self.seconds if self.seconds > 0 else float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python bench/detector_throughput.py --workers 2",
    )
    parser.add_argument("--records", type=int, default=100_000, help="CDRs (default 100000)")
    parser.add_argument("--campaigns", type=int, default=50, help="campaigns (default 50)")
    parser.add_argument(
        "--numbers", type=int, default=200_000, help="distinct callee numbers (default 200000)"
    )
    parser.add_argument(
        "--span-minutes",
        type=float,
        default=60.0,
        help="event time the CDRs cover, in order (default 60)",
    )
    parser.add_argument(
        "--calling-hours",
        action="store_true",
        help="only within the calling hours of a well-run week (Monday-Friday, 16:05-19:55 "
        "in Rome, no Italian holidays: within the `it` hours for every callee), not round "
        "the clock; every part of the span then holds the same mix of calls",
    )
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    parser.add_argument(
        "--body",
        type=int,
        default=1000,
        help="the CDRs reach the topic as the ingest publishes HTTP bodies of this many "
        "records: one envelope per (body, campaign) (default 1000); 0: one CDR per message, "
        "as before envelopes",
    )
    parser.add_argument(
        "--workers",
        type=int,
        choices=(1, 2, 3, 4),
        default=1,
        help="also run this many detector workers together and report scale-out (default 1)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="also run the detector's two stages in two processes (`--stage cdrs` and "
        "`--stage callees`, as `cdrwatch up` does) and report their rate",
    )
    parser.add_argument(
        "--bare-batch",
        type=int,
        default=0,
        help="also time the bare agent with take() batches of this size, e.g. 2000 as the "
        "detector batches (default 0: only per event)",
    )
    parser.add_argument(
        "--quix-python",
        type=Path,
        default=DEFAULT_QUIX_PYTHON,
        help=f"interpreter with quixstreams installed (default {DEFAULT_QUIX_PYTHON})",
    )
    parser.add_argument("--no-quix", action="store_true", help="skip quixstreams")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the (first) detector worker while it is timed and print its "
        "top functions (needs the bench extra)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds each engine may take, start-up included; a detector still running "
        "then is reported with what it did so far (default 180)",
    )
    parser.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (table on stderr)"
    )
    return parser.parse_args(argv)


# -- input --------------------------------------------------------------------------------


def build_records(args: argparse.Namespace) -> list[tuple[bytes, bytes]]:
    started = time.perf_counter()
    cdrs = dialer_traffic(
        args.records,
        seed=args.seed,
        campaigns=args.campaigns,
        numbers=args.numbers,
        # 15:00 in Rome is 14:00 in London and 09:00 in New York: within the `it` calling
        # hours for most callees of the three countries (the US numbers of Central area
        # codes are at 08:00; `--calling-hours` keeps every call within them). The start
        # is a span before now, so a long span (7 days) still ends in the past.
        start=recent_weekday(datetime.now(UTC) - timedelta(minutes=args.span_minutes), 15),
        span=timedelta(minutes=args.span_minutes),
        id_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        calling_hours=args.calling_hours,
    )
    generated = time.perf_counter()
    records = normalized_records(cdrs, b"bench-pseudonym-key-0123456789", lambda: datetime.now(UTC))
    done = time.perf_counter()
    size = sum(len(v) for _, v in records) / max(len(records), 1)
    print(
        f"input     {fmt_int(len(records))} CDRs, {args.campaigns} campaigns, "
        f"{fmt_int(args.numbers)} numbers, {args.span_minutes:g} min of event time"
        f"{' (within calling hours)' if args.calling_hours else ''}, "
        f"{size:,.0f} B each (generated in {generated - started:.1f} s, normalised by the "
        f"ingest code in {done - generated:.1f} s = {len(records) / (done - generated):,.0f} "
        "CDR/s on one core)"
    )
    return records


def as_messages(records: list[tuple[bytes, bytes]], body: int) -> list[tuple[bytes, bytes]]:
    """The Kafka records the ingest publishes for `records` posted in bodies of `body`
    (its own grouping, schemas.cdr_batch_v1.envelopes); body 0: one record per CDR."""
    if body <= 0:
        return records
    return [
        message
        for start in range(0, len(records), body)
        for message in envelopes(records[start : start + body])
    ]


async def produce(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topics.CDRS, key=key, value=value))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _end_offsets(bootstrap: str, *, by_partition: bool = False) -> dict[Any, int]:
    """Records in each topic of the broker (sum of the partitions' end offsets), or in
    each partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        names = await consumer.topics()
        parts = [
            TopicPartition(name, p)
            for name in names
            for p in consumer.partitions_for_topic(name) or ()
        ]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    if by_partition:
        return dict(ends)
    totals: dict[str, int] = {}
    for tp, end in ends.items():
        totals[tp.topic] = totals.get(tp.topic, 0) + end
    return totals


async def _internal_backlog(bootstrap: str, app_id: str) -> int:
    """Records of the app's internal stage topics (named after the app id; change logs and
    the stage guard's heartbeats, which no group consumes, excepted) that its consumer
    group has not committed yet."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from services.detector.stage_guard import heartbeat_topic

    ends = await _end_offsets(bootstrap, by_partition=True)
    unconsumed = heartbeat_topic(app_id)
    stages = {
        tp: end
        for tp, end in ends.items()
        if tp.topic.startswith(app_id)
        and not tp.topic.endswith("-changelog")
        and tp.topic != unconsumed
    }
    if not stages:
        return 0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    done: dict[TopicPartition, int] = {}
    try:
        # Both groups: a "callees" stage worker is its own app, `<app id>-callees`.
        for group in (app_id, f"{app_id}-callees"):
            # With the partitions named: Tansu drops the connection on "all partitions".
            committed = await admin.list_consumer_group_offsets(group, partitions=list(stages))
            for tp, om in committed.items():
                key = TopicPartition(tp.topic, tp.partition)
                done[key] = max(done.get(key, 0), om.offset)
    finally:
        await admin.close()
    return sum(max(0, end - done.get(tp, 0)) for tp, end in stages.items())


def topic_records(bootstrap: str) -> dict[str, int]:
    return asyncio.run(_end_offsets(bootstrap))


def describe_output(before: dict[str, int], after: dict[str, int], app_id: str, cdrs: int) -> str:
    """What the detector wrote per CDR read: stats, alerts, dead letters, its change log."""

    def grown(prefix: str) -> int:
        return sum(n - before.get(t, 0) for t, n in after.items() if t.startswith(prefix))

    parts = [
        ("stats", grown(topics.STATS)),
        ("alerts", grown(topics.ALERTS)),
        ("dead letters", grown(topics.CDRS_DLQ)),
    ]
    # Its own topics (table change logs, internal stages), named after the app id.
    parts += [
        (name[len(app_id) + 1 :], grown(name))
        for name in sorted(after)
        if name.startswith(app_id) and grown(name)
    ]
    listed = ", ".join(f"{name} {fmt_int(n)} ({n / cdrs:.2f}/CDR)" for name, n in parts)
    return f"detector output for {fmt_int(cdrs)} CDRs: {listed}"


# -- engines -------------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    # Uncompressed: prometheus_client gzips for clients that accept it, on the worker's CPU.
    headers = {"Accept-Encoding": "identity"}
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=2.0).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cdrwatch_") and " " in line:
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


SPLIT = "cdrwatch detector, 2 stages"


def run_detector(
    args: argparse.Namespace,
    bootstrap: str,
    broker_pid: int,
    work: Path,
    workers: int,
    *,
    split: bool = False,
) -> Result:
    """`workers` detector workers in one group; `split`: each worker as two processes, its
    CDR stage (timed through its metrics) and its per-callee stage (its CPU counted)."""
    app_id = f"bench-detector-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in range(workers)]
    stages = ["cdrs", "callees"] if split else ["all"]

    def child(i: int, stage: str, port: int) -> Child:
        return Child(
            f"{app_id}-{i}-{stage}",
            python_module("detector", "--metrics-port", str(port), "--stage", stage),
            clean_env(
                CDRWATCH_KAFKA_BOOTSTRAP=bootstrap,
                CDRWATCH_KAFKA_IDEMPOTENCE="false",
                CDRWATCH_KAFKA_PARTITIONS=str(args.partitions),
                CDRWATCH_DATA_DIR=str(work / app_id / str(i)),
                CDRWATCH_APP_ID=app_id,
                CDRWATCH_LOG_JSON="true",
            ),
            work,
        )

    # The timed (first) child of each worker runs the CDR stage; its metrics are watched.
    children = [child(i, stages[0], port) for i, port in enumerate(ports)]
    children += [child(i, stage, free_port()) for i in range(workers) for stage in stages[1:]]
    name = SPLIT if split else "cdrwatch detector" + (f" x{workers}" if workers > 1 else "")
    before = topic_records(bootstrap)
    profiler = None
    try:
        for child in children:
            child.start()
        if args.profile and workers == 1:
            profiler = Profiler(children[0].pid, work / f"{app_id}.pyspy.txt")
        watch = Watch(bootstrap, app_id, broker_pid, ports)
        result = _poll_detector(args, name, children, watch, profiler)
    finally:
        if profiler is not None:
            profiler.stop()
        for child in children:
            child.stop()
    result.output = describe_output(before, topic_records(bootstrap), app_id, args.records)
    if profiler is not None:
        result.profile = profile_summary(profiler.out)
    return result


@dataclass(frozen=True)
class Watch:
    """Where to look while a detector run is timed."""

    bootstrap: str
    app_id: str
    broker_pid: int
    ports: list[int]


def _poll_detector(
    args: argparse.Namespace,
    name: str,
    children: list[Child],
    watch: Watch,
    profiler: Profiler | None,
) -> Result:
    """Poll the workers' metrics every 200 ms (a scrape costs a worker a few ms).
    The clock runs from the start of the first batch until all CDRs are processed AND the
    detector's internal stages (topics named after its app id, e.g. the per-callee stage)
    are consumed: read from its groups' committed offsets, so that end is up to one commit
    interval (1 s) late. The start is the first poll at which every worker has processed a
    batch, less the time the worker says its batches took (`cdrwatch_detector_batch_seconds`:
    with envelopes a first batch holds up to 2,000 messages, some 40,000 CDRs, and a clock
    started at the poll after it left those CDRs out). CPU shares are over the polls."""
    deadline = time.monotonic() + args.timeout
    start: tuple[float, int, float, float, float] | None = None
    main_done: float | None = None
    now = time.perf_counter()
    samples: list[tuple[float, int]] = []
    memory: list[tuple[int, float]] = []  # (CDRs processed, RSS of the detector's processes)
    counts = [0.0] * len(watch.ports)
    metrics: list[dict[str, float]] = [{} for _ in watch.ports]
    while time.monotonic() < deadline:
        for proc in children:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited:\n{proc.log_tail()}")
        for i, port in enumerate(watch.ports):
            with contextlib.suppress(httpx.HTTPError):
                metrics[i] = scrape(port)
                counts[i] = metrics[i].get(PROCESSED, 0.0)
        now = time.perf_counter()
        total = int(sum(counts))
        samples.append((now, total))
        memory.append((total, sum(rss_mib(c.pid) for c in children)))
        if start is None and all(c > 0 for c in counts):
            busy = max(m.get(BATCH_SECONDS, 0.0) for m in metrics)
            start = (now - busy, 0, _cpu(children), cpu_seconds(watch.broker_pid), now)
            samples[:] = [(now - busy, 0), (now, total)]  # the polls before: start-up
            if profiler is not None:
                profiler.start()
        if start is not None and main_done is None and total >= args.records:
            main_done = now
        if main_done is not None:
            backlog = asyncio.run(_internal_backlog(watch.bootstrap, watch.app_id))
            now = time.perf_counter()
            if backlog == 0:
                assert start is not None
                result = _detector_result(name, children, watch, metrics, start, main_done, now)
                early, late = _quarter_rates(samples, start[1], args.records)
                result.note += f"; first/last quarter {fmt_int(early)}/{fmt_int(late)} CDR/s"
                result.counted.update(first_quarter=early, last_quarter=late, sent=args.records)
                rss = _rss_figures(memory, args.records)
                result.note += (
                    f"; RSS after the first quarter {rss['rss_warm_mib']:,.0f} MiB, peak "
                    f"{rss['rss_peak_mib']:,.0f}, at the end {rss['rss_end_mib']:,.0f}"
                )
                result.counted.update(rss)
                return result
        time.sleep(0.2)
    if start is None:
        raise BenchError(
            f"{name} processed nothing in {args.timeout:.0f} s:\n{children[0].log_tail()}"
        )
    result = _detector_result(name, children, watch, metrics, start, main_done or now, now)
    result.note = (
        f"TIMED OUT after {args.timeout:.0f} s at {fmt_int(sum(counts))} of "
        f"{fmt_int(args.records)} CDRs" + (", stages not drained" if main_done else "")
    )
    result.timed_out = True
    return result


def _quarter_rates(samples: list[tuple[float, int]], first: int, last: int) -> tuple[float, float]:
    """CDR/s over the first and the last quarter of the CDRs: a detector whose cost per CDR
    grows with its state slows down as the run goes on."""

    def at(count: float) -> float:
        # Interpolated between the polls around it: with envelopes a poll can see thousands
        # of CDRs more than the one before, and the first poll at or past a count would put
        # a quarter's end and start at the same instant.
        previous = samples[0]
        for t, n in samples:
            if n >= count:
                t0, n0 = previous
                return t if n == n0 else t0 + (t - t0) * (count - n0) / (n - n0)
            previous = (t, n)
        return samples[-1][0]

    span = (last - first) / 4
    early = span / max(at(first + span) - at(first), 1e-9)
    late = span / max(at(last) - at(last - span), 1e-9)
    return early, late


def _rss_figures(memory: list[tuple[int, float]], records: int) -> dict[str, float]:
    """The detector's resident memory (all its processes) once a quarter of the CDRs is
    processed (after warm-up: its campaigns, caches and first windows exist), at its peak
    and at the end: flat state keeps the end near the warm figure."""
    known = [(n, mib) for n, mib in memory if not math.isnan(mib)]
    warm = next((mib for n, mib in known if n >= records / 4), float("nan"))
    return {
        "rss_warm_mib": warm,
        "rss_peak_mib": max((mib for _, mib in known), default=float("nan")),
        "rss_end_mib": known[-1][1] if known else float("nan"),
    }


def _detector_result(
    name: str,
    children: list[Child],
    watch: Watch,
    metrics: list[dict[str, float]],
    start: tuple[float, int, float, float, float],
    main_done: float,
    end: float,
) -> Result:
    seconds = end - start[0]
    polled = max(end - start[4], 1e-9)  # the CPU samples' interval
    counts = [m.get(PROCESSED, 0.0) for m in metrics]
    dups = sum(m.get("cdrwatch_cdrs_duplicate_total", 0) for m in metrics)
    rejected = sum(
        v for m in metrics for k, v in m.items() if k.startswith("cdrwatch_cdrs_rejected_total")
    )
    alerts = sum(m.get("cdrwatch_detector_alert_updates_total", 0) for m in metrics)
    note = (
        f"main agent done at {main_done - start[0]:.1f} s; alert updates {fmt_int(alerts)}, "
        f"dup {dups:.0f}, rejected {rejected:.0f}"
    )
    if len(counts) > 1:
        note += ", per worker " + "/".join(fmt_int(c) for c in counts)
    return Result(
        name,
        int(sum(counts)) - start[1],
        seconds,
        (_cpu(children) - start[2]) / polled,
        (cpu_seconds(watch.broker_pid) - start[3]) / polled,
        note,
        counted={"processed": sum(counts), "duplicates": dups, "rejected": rejected},
    )


def _cpu(children: list[Child]) -> float:
    return sum(cpu_seconds(c.pid) for c in children)


def run_worker_script(
    name: str, argv: list[str], work: Path, broker_pid: int, timeout: float
) -> Result:
    """Run a bench/_*_worker.py; it prints {"event": "first"} at its first record and
    {"count", "seconds"} at its last. CPU shares are sampled between the two lines."""
    child = Child(name.replace(" ", "-"), argv, clean_env(), work, pipe_stdout=True)
    deadline = time.monotonic() + timeout
    try:
        child.start()
        marks: list[tuple[float, float, float]] = []
        while time.monotonic() < deadline:
            line = child.read_line(max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                marks.append((time.perf_counter(), cpu_seconds(child.pid), cpu_seconds(broker_pid)))
                if "count" in message:
                    wall = marks[-1][0] - marks[0][0]
                    return Result(
                        name,
                        int(message["count"]) - 1,
                        float(message["seconds"]),
                        (marks[-1][1] - marks[0][1]) / wall if wall > 0 else math.nan,
                        (marks[-1][2] - marks[0][2]) / wall if wall > 0 else math.nan,
                        str(message.get("note", "")),
                    )
        state = "exited" if not child.alive() else f"not done after {timeout:.0f} s"
        raise BenchError(f"{name} {state}:\n{child.log_tail()}")
    finally:
        child.stop()


def run_bare(
    args: argparse.Namespace, bootstrap: str, broker_pid: int, work: Path, batch: int
) -> Result:
    app_id = f"bench-bare-{uuid.uuid4().hex[:8]}"
    name = "bare faust agent" + (f" take({batch})" if batch else "")
    argv = [
        sys.executable,
        str(ROOT / "bench" / "_bare_faust_worker.py"),
        "--bootstrap",
        bootstrap,
        "--app-id",
        app_id,
        "--data-dir",
        str(work / app_id),
        "--partitions",
        str(args.partitions),
        "--expect",
        str(args.records),
        "--batch",
        str(batch),
    ]
    return run_worker_script(name, argv, work, broker_pid, args.timeout)


def quix_version(python: Path) -> str:
    """quixstreams' version under `python`; raises BenchError saying why not."""
    if not python.exists():
        raise BenchError(
            f"no {python}; `make bench` installs quixstreams there (it pins pydantic<2.14, "
            "cdrwatch needs ~=2.14, so it cannot share .venv)"
        )
    try:
        out = subprocess.run(
            [str(python), "-c", "import quixstreams; print(quixstreams.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"cannot run {python}: {exc}") from exc
    if out.returncode != 0:
        raise BenchError(f"quixstreams does not import: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


def run_quix(args: argparse.Namespace, bootstrap: str, broker_pid: int, work: Path) -> Result:
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    argv = [
        str(args.quix_python),
        str(ROOT / "bench" / "_quixstreams_worker.py"),
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--state-dir",
        str(work / group),
        "--expect",
        str(args.records),
    ]
    return run_worker_script("quixstreams count", argv, work, broker_pid, args.timeout)


# -- report --------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    print()
    columns = ("CDRs", 9), ("seconds", 8), ("CDR/s", 9), ("engine CPU", 11), ("broker CPU", 11)
    print(f"  {'engine':<28} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for r in results:
        print(
            f"  {r.engine:<28} {fmt_int(r.cdrs):>9} {r.seconds:>8.2f} {fmt_int(r.rate):>9} "
            f"{r.engine_cpu:>11.0%} {r.broker_cpu:>11.0%}   {r.note}"
        )
    print("  (CPU: share of one core over the measured interval; the machine has 2 cores)")
    for r in results:
        if r.output:
            print(f"  {r.engine}: {r.output}")


def ratios(results: list[Result]) -> dict[str, float]:
    by_name = {r.engine: r for r in results}
    detector = by_name.get("cdrwatch detector")
    out: dict[str, float] = {}
    if detector is None:
        return out
    take = next((n for n in by_name if n.startswith("bare faust agent take")), "")
    for other, key, bar in (
        ("bare faust agent", "detector/bare", 0.8),
        (take, "detector/bare take", 0.8),
        ("quixstreams count", "detector/quixstreams", 2.0),
    ):
        if other in by_name:
            out[key] = detector.rate / by_name[other].rate
            print(f"  {key:<22} {out[key]:5.2f}   (SPEC bar >= {bar})")
    scaled = [r for r in results if r.engine.startswith("cdrwatch detector x")]
    for r in scaled:
        workers = int(r.engine.rsplit("x", 1)[1])
        out[f"scale-out x{workers}"] = r.rate / detector.rate
        print(
            f"  scale-out x{workers:<11} {out[f'scale-out x{workers}']:5.2f}   "
            f"(x{workers} workers / x1; {workers} would be linear)"
        )
    return out


def body(args: argparse.Namespace) -> None:
    try:
        quix = None if args.no_quix else quix_version(args.quix_python)
        quix_reason = "skipped (--no-quix)" if args.no_quix else ""
    except BenchError as exc:
        quix, quix_reason = None, str(exc)
    print_header(
        "detector_throughput",
        ("faust-streaming", "aiokafka", "orjson", "pydantic"),
        {
            "records": args.records,
            "partitions": args.partitions,
            "body": args.body,
            "workers": args.workers,
            "seed": args.seed,
            "quixstreams": quix or "-",
        },
    )
    results: list[Result] = []
    failures: list[str] = []
    with work_dir(args.keep) as work, embedded_broker(work, args.partitions) as (bootstrap, pid):
        records = build_records(args)
        messages = as_messages(records, args.body)
        started = time.perf_counter()
        asyncio.run(produce(bootstrap, messages))
        seconds = time.perf_counter() - started
        print(
            f"produced  {fmt_int(len(records))} CDRs in {fmt_int(len(messages))} messages to "
            f"{topics.CDRS} in {seconds:.1f} s ({len(records) / seconds:,.0f} CDR/s, "
            "aiokafka acks=all)"
        )
        del records, messages
        runs = [("bare faust agent", lambda: run_bare(args, bootstrap, pid, work, 0))]
        if args.bare_batch:
            runs.append(
                ("bare faust take", lambda: run_bare(args, bootstrap, pid, work, args.bare_batch))
            )
        runs.append(("cdrwatch detector", lambda: run_detector(args, bootstrap, pid, work, 1)))
        if args.split:
            runs.append((SPLIT, lambda: run_detector(args, bootstrap, pid, work, 1, split=True)))
        if args.workers > 1:
            runs.append(
                (
                    f"cdrwatch detector x{args.workers}",
                    lambda: run_detector(args, bootstrap, pid, work, args.workers),
                )
            )
        if quix:
            runs.append(("quixstreams", lambda: run_quix(args, bootstrap, pid, work)))
        for name, run in runs:
            print(f"running   {name} ...", flush=True)
            try:
                results.append(run())
            except BenchError as exc:
                failures.append(f"{name}: {exc}")
                print(f"  {name} failed: {str(exc).splitlines()[0]}", flush=True)
    print_table(results)
    if quix is None:
        print(f"  quixstreams: unavailable ({quix_reason})")
    elif not any(r.engine.startswith("quixstreams") for r in results):
        print("  quixstreams: unavailable (it did not finish; see above)")
    print()
    found = ratios(results)
    for r in results:
        if r.profile:
            print()
            print("\n".join(r.profile))
    for failure in failures:
        print(f"\n{failure}", file=sys.stderr)
    if args.json:
        payload = {
            "benchmark": "detector_throughput",
            "results": [asdict(r) | {"rate": r.rate} for r in results],
            "ratios": found,
            "failures": failures,
        }
        emit_json(payload)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args.json, lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
