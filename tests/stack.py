"""Running real cdrwatch processes from tests, and reading what they publish.

Everything listens on 127.0.0.1 on free ports; every process is stopped by the test that
started it (and dies with the test process through the services' own parent-death
handling where they have it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from schemas import topics
from schemas.record_batch_v1 import records_in
from services.detector.core.classify import classify
from services.detector.core.model import EMPTY, BucketCounts, CallRecord
from services.detector.core.profiles import load_profile
from services.detector.core.windows import minute_of

ROOT = Path(__file__).resolve().parent.parent


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ServiceProcess:
    """`python -m services.cli ARGS` with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "services.cli", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def service_env(bootstrap: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
    env.update(
        CDRWATCH_KAFKA_BOOTSTRAP=bootstrap,
        CDRWATCH_KAFKA_IDEMPOTENCE="false",
        CDRWATCH_DATA_DIR=str(data_dir),
        CDRWATCH_LOG_JSON="true",
        PYTHONUNBUFFERED="1",  # a SIGKILLed service's last lines reach its log
    )
    env.update(extra)
    return env


def normalized_cdr(
    call_id: str,
    campaign: str,
    kind: str,
    originated: datetime,
    *,
    tenant: str | None = None,
    callee: int | None = None,
) -> dict[str, Any]:
    """A record as ingest publishes it on cdrwatch.cdrs.v1 (kinds: connected, silent,
    late, machine, unanswered). `callee` picks a pseudonymised callee from a pool (calls
    with the same number reach the per-callee rules); by default every call has its own."""
    key = f"{callee:032x}" if callee is not None else f"{abs(hash(call_id)):032x}"[:32]
    record: dict[str, Any] = {
        "call_id": call_id,
        "campaign_id": campaign,
        "callee_key": key,
        "callee_country": "IT",
        "callee_zones": ["Europe/Rome"],
        "originated_at": iso(originated),
        "ended_at": iso(originated + timedelta(seconds=90)),
        "accepted_at": iso(datetime.now(UTC)),
    }
    if tenant is not None:
        record["tenant_id"] = tenant
    answered = originated + timedelta(seconds=12)
    if kind == "unanswered":
        record["hangup_side"] = "callee"
        return record
    record["answered_at"] = iso(answered)
    record["amd_result"] = "machine" if kind == "machine" else "human"
    if kind == "connected":
        record["agent_connected_at"] = iso(answered + timedelta(seconds=1))
    elif kind == "late":
        record["agent_connected_at"] = iso(answered + timedelta(seconds=4))
    return record


def to_call(record: dict[str, Any]) -> CallRecord:
    """The detector's call record, with the plain campaign id its outputs carry (the
    detector's core keys by the scoped key `tenant/campaign`)."""
    import dataclasses

    from schemas import NormalizedCdrV1
    from services.detector.wire import to_call_record

    call = to_call_record(NormalizedCdrV1.model_validate(record))
    return dataclasses.replace(call, campaign_id=record["campaign_id"])


def expected_buckets(
    records: Iterable[dict[str, Any]], profile: str = "it"
) -> dict[tuple[str, int], BucketCounts]:
    """What the detector must end with: first copy of each (tenant, call_id) wins."""
    prof = load_profile(profile)
    seen: set[tuple[str | None, str]] = set()
    out: dict[tuple[str, int], BucketCounts] = {}
    for record in records:
        key = (record.get("tenant_id"), record["call_id"])
        if key in seen:
            continue
        seen.add(key)
        call = to_call(record)
        bucket = (call.campaign_id, minute_of(call.originated_at))
        out[bucket] = out.get(bucket, EMPTY).add(classify(call, prof))
    return out


@dataclass
class Published:
    """What the detector published, folded the way the api folds it."""

    minutes: dict[tuple[str, int], BucketCounts] = field(default_factory=dict)
    cumulative: dict[str, BucketCounts] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    alert_messages: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """One Kafka record; a record batch envelope is each of its records in order."""
        if topic in (topics.STATS, topics.ALERTS):
            for body, record_headers in records_in(value, headers):
                self.apply_record(topic, body, record_headers)
        else:
            self.apply_record(topic, orjson.loads(value), headers)

    def apply_record(self, topic: str, body: Any, headers: list[tuple[str, bytes]]) -> None:
        if topic == topics.STATS:
            counts = BucketCounts(*(body[name] for name in BucketCounts._fields))
            window = dict(headers).get(topics.HEADER_WINDOW, b"").decode()
            cid = body["campaign_id"]
            if window == "minute":
                key = (cid, minute_of(datetime.fromisoformat(body["from"])))
                previous = self.minutes.get(key, EMPTY)
                self.minutes[key] = BucketCounts(
                    *(max(a, b) for a, b in zip(previous.to_list(), counts.to_list(), strict=True))
                )
            elif window == "cumulative":
                self.cumulative[cid] = counts
        elif topic == topics.ALERTS:
            self.alerts[body["id"]] = body
            self.alert_messages.append(body)
        elif topic == topics.CDRS_DLQ:
            self.dead_letters.append(body)


class OutputReader:
    """Reads the stats, alerts and dead-letter topics from the start (no group)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topics.STATS,
            topics.ALERTS,
            topics.CDRS_DLQ,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            enable_auto_commit=False,
        )
        self.published = Published()

    async def start(self) -> None:
        await self.consumer.start()

    async def poll(self) -> Published:
        batches = await self.consumer.getmany(timeout_ms=200, max_records=50_000)
        for messages in batches.values():
            for message in messages:
                self.published.apply(message.topic, message.value, list(message.headers))
        return self.published

    async def stop(self) -> None:
        await self.consumer.stop()


def expected_lockouts(
    records: Iterable[dict[str, Any]], profile: str = "it"
) -> dict[tuple[str, str, date], int]:
    """(campaign, rule, local day) -> violating calls, from the whole set of calls at once
    (first copy of each call id wins, as in the detector)."""
    from services.detector.core import lockouts
    from services.detector.core.windows import local_day_of

    prof = load_profile(profile)
    rules = lockouts.LockoutRules.of(prof)
    seen: set[str] = set()
    histories: dict[str, tuple[lockouts.CalleeCall, ...]] = {}
    found: set[tuple[str, str, str, date]] = set()
    for record in records:
        if record["call_id"] in seen:
            continue
        seen.add(record["call_id"])
        call = to_call(record)
        key = f"{call.tenant_id or ''}\x1f{call.callee_key}"
        history, violations = lockouts.record_call(
            histories.get(key, ()), lockouts.callee_call(call, classify(call, prof)), rules
        )
        histories[key] = history
        for v in violations:
            day = local_day_of(minute_of(v.originated_at), prof.home_zone)
            found.add((v.campaign_id, v.rule_id, v.call_id, day))
    counts: dict[tuple[str, str, date], int] = {}
    for campaign, rule, _call, day in found:
        counts[(campaign, rule, day)] = counts.get((campaign, rule, day), 0) + 1
    return counts
