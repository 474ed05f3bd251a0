"""The chaos lane's ledger: what was sent, what the ingest acknowledged, and what the stats
and alerts must therefore say — computed with the pure core, never written down by hand.

- `CallFactory` makes each campaign's CDRs (a fixed cycle of call kinds, one callee number
  per call so that no per-callee rule is involved) and plants bad records on purpose.
- `Ledger` records every answer: a record is accepted only when a 202 names it accepted;
  planted records must come back rejected naming their field; every 5xx is counted.
- `expected_minutes` / `expected_alerts` replay the accepted records through
  services/detector/core (classify, Engine) to get the figures the API must show.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.cdr_v1 import parse_cdr
from services.detector.core.classify import classify
from services.detector.core.compliance import evaluate_windows
from services.detector.core.engine import (
    BucketState,
    CampaignConfig,
    CampaignState,
    DayViolations,
    Engine,
    Event,
)
from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.profiles import load_profile
from services.detector.core.windows import MinuteIndex, minute_of
from services.detector.wire import scoped_key, to_call_record
from services.ingest.normalize import Normalizer

DEFAULT_TENANT = "default"
# A Monday; 18:00 in Rome. Calls run into the evening, so some are out of hours.
T0 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
CALL_SPACING = timedelta(seconds=2)

# Call kinds in the order each campaign repeats them. Mixes are uniform over any prefix, so
# an alert's final state does not depend on how the detector happened to batch the records.
VIOLATING_MIX = (
    ("connected",) * 40
    + ("silent",) * 3
    + ("late",) * 2
    + ("machine",) * 2
    + (
        "no_answer",
        "no_answer",
        "short_ring",
    )
)
COMPLIANT_MIX = ("connected",) * 45 + ("machine",) * 3 + ("no_answer", "short_ring")

# Planted bad records: how to spoil a good record, and the field the error must name.
PLANTS: dict[str, str] = {
    "instant_overflow": "originated_at",
    "year_one": "originated_at",
    "epoch_seconds": "originated_at",
    "backwards": "ended_at",
    "slash_in_id": "call_id",
    "control_in_campaign": "campaign_id",
    "foreign_tenant": "tenant_id",
    "deep_extra": "extra",
    "far_future": "originated_at",
}


@dataclass(frozen=True)
class Campaign:
    tenant: str
    campaign_id: str
    profile: str
    mix: tuple[str, ...]

    @property
    def scoped(self) -> str:
        return scoped_key(self.tenant, self.campaign_id)


def default_campaigns() -> list[Campaign]:
    """Three tenants (the default one via an unbound token), five campaigns, the same id
    `shared` in two tenants, three profiles."""
    return [
        Campaign(DEFAULT_TENANT, "outbound-it", "it", VIOLATING_MIX),
        Campaign("acme", "energia", "it", VIOLATING_MIX),
        Campaign("acme", "shared", "uk", COMPLIANT_MIX),
        Campaign("globex", "shared", "us", VIOLATING_MIX),
        Campaign("globex", "retention", "it", COMPLIANT_MIX),
    ]


def _iso(moment: datetime, zone_minutes: int = 60) -> str:
    from datetime import timezone

    return moment.astimezone(timezone(timedelta(minutes=zone_minutes))).isoformat()


class CallFactory:
    """Each campaign's calls, numbered; a call's content depends only on its number."""

    def __init__(self, run_tag: str) -> None:
        self.run_tag = run_tag
        self._next: dict[str, int] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def made(self, campaign: Campaign) -> int:
        """How many calls of `campaign` were made (sent or not)."""
        with self._lock:
            return self._next.get(campaign.scoped, 0)

    def next_calls(self, campaign: Campaign, count: int) -> list[dict[str, Any]]:
        with self._lock:
            first = self._next.get(campaign.scoped, 0)
            self._next[campaign.scoped] = first + count
            numbers = [next(self._numbers) for _ in range(count)]
        return [self.call(campaign, first + i, numbers[i]) for i in range(count)]

    def call(
        self, campaign: Campaign, n: int, number: int, at: datetime | None = None
    ) -> dict[str, Any]:
        kind = campaign.mix[n % len(campaign.mix)]
        at = T0 + n * CALL_SPACING if at is None else at
        record: dict[str, Any] = {
            "call_id": f"{self.run_tag}-{campaign.campaign_id}-{n}",
            "campaign_id": campaign.campaign_id,
            "callee_number": f"+39347{number:07d}",
            "originated_at": _iso(at),
            "ringing_at": _iso(at + timedelta(seconds=1), 0),
        }
        answered = at + timedelta(seconds=8)
        if kind == "short_ring":
            record.update(ended_at=_iso(at + timedelta(seconds=10)), hangup_side="system")
        elif kind == "no_answer":
            record.update(ended_at=_iso(at + timedelta(seconds=30)), hangup_side="callee")
        else:
            record["answered_at"] = _iso(answered)
            record["ended_at"] = _iso(answered + timedelta(seconds=120))
            if kind == "machine":
                record["amd_result"] = "machine"
            elif kind == "silent":
                record.update(amd_result="human", ended_at=_iso(answered + timedelta(seconds=2)))
            elif kind == "late":
                record.update(
                    amd_result="human", agent_connected_at=_iso(answered + timedelta(seconds=2.5))
                )
            else:
                record.update(
                    amd_result="human", agent_connected_at=_iso(answered + timedelta(seconds=1))
                )
        return record

    def planted(self, campaign: Campaign, plant: str, serial: int) -> dict[str, Any]:
        """A record that must be rejected naming `PLANTS[plant]`; its call id is its own."""
        with self._lock:
            number = next(self._numbers)
        future = datetime.now(UTC) + timedelta(days=3)
        record = self.call(campaign, 0, number, future if plant == "far_future" else None)
        record["call_id"] = f"{self.run_tag}-bad-{plant}-{serial}"
        if plant == "instant_overflow":
            record["originated_at"] = "0001-01-01T00:30:00+01:00"
        elif plant == "year_one":
            record["originated_at"] = "0001-01-01T00:00:00Z"
        elif plant == "epoch_seconds":
            record["originated_at"] = int(T0.timestamp())
        elif plant == "backwards":
            record["ended_at"] = _iso(T0 - timedelta(days=1))
        elif plant == "slash_in_id":
            record["call_id"] = f"{self.run_tag}/bad/{serial}"
        elif plant == "control_in_campaign":
            record["campaign_id"] = f"{campaign.campaign_id}\x1b[31m"
        elif plant == "foreign_tenant":
            record["tenant_id"] = "acme" if campaign.tenant != "acme" else "globex"
        elif plant == "deep_extra":
            value: Any = 1
            for _ in range(40):
                value = {"k": value}
            record["extra"] = {"nested": value}
        elif plant != "far_future":
            raise AssertionError(plant)
        return record


@dataclass
class Batch:
    """One POST: the records as sent, and the indexes planted to be rejected."""

    campaign: Campaign
    records: list[dict[str, Any]]
    planted: dict[int, str] = field(default_factory=dict)  # index -> plant

    @property
    def good(self) -> list[dict[str, Any]]:
        return [r for i, r in enumerate(self.records) if i not in self.planted]


class Ledger:
    """Thread-safe account of every request and its answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0  # distinct CDRs offered (retries of a batch not counted again)
        self.accepted: dict[tuple[str, str], dict[str, Any]] = {}  # (tenant, call_id)
        # Accepted records in the order their 202s came, per scoped campaign.
        self.accepted_batches: dict[str, list[list[dict[str, Any]]]] = {}
        # The same batches as the core's call records, converted as they are acknowledged
        # (a campaign is posted by one thread, so each list keeps the order of the 202s).
        self.accepted_calls: dict[str, list[list[Any]]] = {}
        self.statuses: Counter[int] = Counter()
        self.five_xx = 0
        self.unavailable = 0  # 503 with Retry-After: nothing accepted, retry (not a failure)
        self.connection_errors = 0
        self.expected_rejections = 0
        self.problems: list[str] = []

    def offered(self, batch: Batch) -> None:
        with self._lock:
            self.sent += len(batch.records)

    def problem(self, text: str) -> None:
        with self._lock:
            if len(self.problems) < 200:
                self.problems.append(text)

    def answer(self, status: int, retry_after: str | None) -> None:
        with self._lock:
            self.statuses[status] += 1
            if status == 503 and retry_after:
                self.unavailable += 1
            elif status >= 500:
                self.five_xx += 1

    def connection_error(self) -> None:
        with self._lock:
            self.connection_errors += 1

    def accepted_batch(self, batch: Batch, body: dict[str, Any]) -> None:
        """A 202 for `batch`: check it names exactly the planted records, record the rest."""
        rejected = {r["index"]: r for r in body.get("rejected", [])}
        for index, plant in batch.planted.items():
            errors = rejected.get(index, {}).get("errors", [])
            want = PLANTS[plant]
            if not any(e.get("field", "").split(".")[0] == want for e in errors):
                self.problem(
                    f"planted {plant} at index {index} of {batch.campaign.scoped}: expected an "
                    f"error naming {want}, got {errors or 'accepted'}"
                )
        unplanned = sorted(set(rejected) - set(batch.planted))
        if unplanned:
            self.problem(
                f"good records rejected in {batch.campaign.scoped}: "
                f"{[rejected[i] for i in unplanned[:3]]}"
            )
        accepted = [
            r for i, r in enumerate(batch.records) if i not in rejected and i not in batch.planted
        ]
        # A planted record the ingest took anyway is counted downstream: keep the ledger true.
        accepted += [batch.records[i] for i in batch.planted if i not in rejected]
        if body.get("accepted") != len(accepted):
            self.problem(
                f"202 for {batch.campaign.scoped} says accepted {body.get('accepted')}, "
                f"the batch had {len(accepted)} acceptable records"
            )
        with self._lock:
            self.expected_rejections += len(set(rejected) & set(batch.planted))
            tenant = batch.campaign.tenant
            fresh = []
            for record in accepted:
                key = (record.get("tenant_id") or tenant, record["call_id"])
                if key not in self.accepted:
                    self.accepted[key] = record
                    fresh.append(record)
            self.accepted_batches.setdefault(batch.campaign.scoped, []).append(fresh)
            calls = self.accepted_calls.setdefault(batch.campaign.scoped, [])
        calls.append(_calls(fresh, tenant))

    def rejected_batch(self, batch: Batch, status: int, body: Any) -> None:
        """A 4xx for the whole batch: only right for a batch made only of planted records."""
        if status == 422 and batch.planted and len(batch.planted) == len(batch.records):
            with self._lock:
                self.expected_rejections += len(batch.records)
            return
        self.problem(f"{status} for a batch of {batch.campaign.scoped}: {str(body)[:300]}")


# -- the oracle: what the API must show, from the pure core --------------------------------

_NORMALIZER = Normalizer(
    b"chaos-ledger-key-0123456789abcdef", lambda: datetime.now(UTC), timedelta(hours=1)
)


def _calls(records: Iterable[dict[str, Any]], tenant: str) -> list[Any]:
    out = []
    for record in records:
        cdr, errors = parse_cdr(record)
        assert cdr is not None, errors
        cdr = cdr.model_copy(update={"tenant_id": cdr.tenant_id or tenant})
        normalized, errors = _NORMALIZER.normalize(cdr)
        assert normalized is not None, errors
        out.append(to_call_record(normalized))
    return out


CallBatches = dict[str, list[list[Any]]]


def accepted_calls(ledger: Ledger) -> CallBatches:
    """Scoped campaign -> the core's call records of each accepted batch, in the order the
    202s came (each record validated and normalised as the ingest does)."""
    return {scoped: list(batches) for scoped, batches in ledger.accepted_calls.items()}


def expected_minutes(
    calls: CallBatches, campaigns: list[Campaign]
) -> dict[str, dict[int, BucketCounts]]:
    """Scoped campaign -> minute -> counts of the accepted calls (first copy wins)."""
    out: dict[str, dict[int, BucketCounts]] = {c.scoped: {} for c in campaigns}
    by_scope = {c.scoped: c for c in campaigns}
    for scoped, batches in calls.items():
        profile = load_profile(by_scope[scoped].profile)
        buckets = out[scoped]
        for call in (c for batch in batches for c in batch):
            minute = minute_of(call.originated_at)
            buckets[minute] = buckets.get(minute, EMPTY).add(classify(call, profile))
    return out


def window_counts(
    minutes: dict[int, BucketCounts], start: datetime, end: datetime
) -> dict[str, int]:
    first, last = minute_of(start), minute_of(end)
    total = EMPTY
    for minute, counts in minutes.items():
        if first <= minute < last:
            total = total.merge(counts)
    return total.as_dict()


class _DictState:
    """The engine's StateStore port on dicts."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, ...], Any] = {}
        self.minutes = MinuteIndex()

    def get_seen(self, key: str) -> Any:
        return self.data.get(("s", key))

    def put_seen(self, key: str, value: Any, partition: int) -> None:
        self.data[("s", key)] = value

    def get_bucket(self, campaign_id: str, minute: int) -> BucketState | None:
        raw = self.data.get(("b", campaign_id, str(minute)))
        return None if raw is None else BucketState.from_json(raw)

    def put_bucket(self, campaign_id: str, minute: int, state: BucketState, partition: int) -> None:
        self.data[("b", campaign_id, str(minute))] = state.to_json()
        self.minutes.add(campaign_id, minute)

    def bucket_minutes(self, campaign_id: str, first: int, last_exclusive: int) -> list[int]:
        return self.minutes.between(campaign_id, first, last_exclusive)

    def get_day_violations(self, campaign_id: str, rule_id: str, day: Any) -> Any:
        raw = self.data.get(("v", campaign_id, rule_id, day.isoformat()))
        return None if raw is None else DayViolations.from_json(raw)

    def put_day_violations(
        self, campaign_id: str, rule_id: str, day: Any, state: Any, partition: int
    ) -> None:
        self.data[("v", campaign_id, rule_id, day.isoformat())] = state.to_json()

    def get_campaign(self, campaign_id: str) -> CampaignState | None:
        raw = self.data.get(("c", campaign_id))
        return None if raw is None else CampaignState.from_json(raw)

    def put_campaign(self, campaign_id: str, state: CampaignState, partition: int) -> None:
        self.data[("c", campaign_id)] = state.to_json()


def expected_alerts(calls: CallBatches, campaigns: list[Campaign]) -> dict[str, dict[str, Any]]:
    """Alert id -> its last transition, from the core engine fed the accepted batches of
    each campaign in the order they were acknowledged (campaign ids as the API shows them:
    plain, with `tenant_id`)."""
    configs = {c.scoped: CampaignConfig(load_profile(c.profile)) for c in campaigns}
    engine = Engine(
        _DictState(),
        lambda scoped: configs[scoped],
        lateness=timedelta(days=7),
        clock=lambda: datetime.now(UTC),
    )
    by_scope = {c.scoped: c for c in campaigns}
    final: dict[str, dict[str, Any]] = {}
    offset = 0
    for scoped, batches in calls.items():
        campaign = by_scope[scoped]
        for batch in batches:
            events = []
            for call in batch:
                events.append(Event(0, offset, call))
                offset += 1
            for alert in engine.process(events).alerts:
                final[alert["id"]] = {
                    **alert,
                    "campaign_id": campaign.campaign_id,
                    "tenant_id": campaign.tenant,
                }
    return final


def _number(value: Any) -> int | float:
    from fractions import Fraction

    value = Fraction(value)
    return int(value) if value.denominator == 1 else float(value)


def expected_compliance(
    minutes: dict[str, dict[int, BucketCounts]], campaigns: list[Campaign]
) -> dict[str, list[tuple[Any, ...]]]:
    """Scoped campaign -> its regulatory windows as GET /compliance must list them:
    (rule, window, start, numerator, denominator, verdict), from `core.compliance`."""
    out = {}
    for campaign in campaigns:
        verdicts = evaluate_windows(load_profile(campaign.profile), minutes[campaign.scoped])
        out[campaign.scoped] = [
            compliance_row(v.rule_id, v.window, v.start, v.numerator, v.denominator, v.verdict)
            for v in verdicts
        ]
    return out


def compliance_row(
    rule: str, window: str, start: Any, numerator: Any, denominator: Any, verdict: str
) -> tuple[Any, ...]:
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return (rule, window, start.astimezone(UTC), _number(numerator), _number(denominator), verdict)
