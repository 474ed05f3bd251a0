"""The detector's per-batch state machine, free of faust: dedup, lateness, buckets,
windows, rule evaluation and alert transitions.

Exactness across crashes (SPEC "Quality bars": no loss, no double count across a kill -9):
processing is at-least-once, so after a restart events may be seen again whose effects
were already stored. All state lives in ONE keyed store whose change log is a single
ordered log per partition (one faust table), and each batch writes in a fixed order: the
seen-entry of each call as it is processed, then the touched buckets, then the campaign
record last. A restart recovers some prefix of that log, so:
- campaign.watermark >= offset  ⇒ the event and everything it touched are stored: skip it;
- otherwise the campaign record is as it was before the event's batch, the event is judged
  again (duplicate? too late?) exactly as the first time, and a bucket whose watermark
  already covers the offset is not added to twice;
- a seen-entry with the same (partition, offset) is the event itself, replayed; with
  another offset, a true duplicate.
Events of one campaign come from one partition in offset order (the CDR topic is keyed by
campaign), which is what makes watermarks meaningful.

Why one ordered log and not, say, dedup marks inside the buckets: the store's change log
IS that one log, so a crash can only cut it, never reorder it; the seen-entry, the bucket
and the campaign record of a call need no common record, because the watermarks tell on
re-read which of them already hold the call. Two conditions outside the engine keep it
so (services/detector/app.py): every key of a campaign is written to the partition of its
events (one log), and offsets are committed only over delivered change log (its
`DeliveryGuard`: faust's own flush may return early, and then a commit overtook the change
log and a SIGKILL lost counted calls for good).

Outputs (stats, alerts, dead letters, callee events) go to other topics, with no order
relative to the change log: a crash can keep a batch's change log and lose its outputs.
Downstream upserts (stats last-write-wins, alerts by deterministic id), so the fix is to
publish again: an event found fully applied on re-read re-publishes, from the stored state,
what it touched (its minute bucket, day and period windows, the campaign's windows and
alerts), exactly as a first pass would have. Without it a finished minute bucket kept the
figures of the batch before the crash forever (tests/unit/test_engine.py, "published
figures" crash test).

The state store is a port (`StateStore`); the faust adapter implements it with tables and
tests with dicts. `process()` returns everything to publish; it never does I/O itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import Enum
from fractions import Fraction
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from services.detector.core.alerting import (
    AlertStatus,
    AlertUpdate,
    Severity,
    advance,
    alert_id,
)
from services.detector.core.classify import classify
from services.detector.core.lockouts import CalleeCall, LockoutViolation, callee_call
from services.detector.core.model import EMPTY, BucketCounts, CallOutcome, CallRecord
from services.detector.core.profiles import Profile, RateRule
from services.detector.core.rules import (
    Level,
    Measurement,
    RateJudge,
    assess,
    effective_amd_ratio,
    rate_terms,
)
from services.detector.core.windows import (
    EPOCH,
    LIVE_ROLLING,
    MINUTE_US,
    PERIOD_30D,
    WINDOW_KINDS,
    BatchTouch,
    RollingSum,
    SparseLookup,
    Window,
    WindowKind,
    boundary_in,
    instant_us,
    local_day_bounds,
    local_day_of,
    minute_of,
    minute_start,
    period_counts,
    period_index,
    sum_buckets,
)

EVIDENCE_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class Event:
    """One CDR as read from its partition."""

    partition: int
    offset: int
    call: CallRecord


@dataclass(slots=True)
class BucketState:
    """One minute of a campaign. `head`: the counts of its calls before the 30-day period
    boundary inside it (`windows.boundary_in`), EMPTY in a minute holding none."""

    counts: BucketCounts
    watermark: int
    head: BucketCounts = EMPTY

    def to_json(self) -> tuple[int, ...]:
        """A tuple, not a list: the collector stops tracking a tuple of ints, so the
        buckets a worker holds (one a call at 2,000 campaigns) are not walked again by
        every collection (services/common/gc_tuning.py)."""
        head = () if self.head == EMPTY else tuple(self.head)
        return (self.watermark, *self.counts, *head)

    @classmethod
    def from_json(cls, raw: Sequence[int]) -> BucketState:
        head = BucketCounts.from_list(raw[9:17]) if len(raw) > 9 else EMPTY
        return cls(BucketCounts.from_list(raw[1:9]), raw[0], head)


@dataclass(slots=True)
class DayViolations:
    """Calls of one campaign breaking (or not verifiable by) one per-call rule on one
    calendar day of the profile's zone, with evidence samples and the alert's opening."""

    count: int = 0
    samples: list[tuple[int, str]] = field(default_factory=list)
    unverifiable: int = 0
    unverifiable_samples: list[tuple[int, str]] = field(default_factory=list)
    watermark: int = -1
    opened_at_us: int | None = None
    unverifiable_opened_at_us: int | None = None
    # Lockout and frequency violations come at least once from the callee stage, on another
    # topic: they are counted once per call id (per-call rules use the watermark instead).
    call_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_ids": self.call_ids,
            "count": self.count,
            "samples": [list(x) for x in self.samples],
            "unverifiable": self.unverifiable,
            "unverifiable_samples": [list(x) for x in self.unverifiable_samples],
            "watermark": self.watermark,
            "opened_at_us": self.opened_at_us,
            "unverifiable_opened_at_us": self.unverifiable_opened_at_us,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DayViolations:
        return cls(
            count=raw["count"],
            samples=[(int(m), str(c)) for m, c in raw["samples"]],
            unverifiable=raw["unverifiable"],
            unverifiable_samples=[(int(m), str(c)) for m, c in raw["unverifiable_samples"]],
            watermark=raw["watermark"],
            opened_at_us=raw["opened_at_us"],
            unverifiable_opened_at_us=raw["unverifiable_opened_at_us"],
            call_ids=list(raw.get("call_ids", [])),
        )


@dataclass(slots=True)
class CampaignState:
    """Everything kept per campaign besides its buckets (one record, written once a batch)."""

    campaign_id: str
    tenant_id: str | None
    profile: str
    first_minute: int
    newest_minute: int
    newest_at: datetime
    totals: BucketCounts = EMPTY
    # The exact instant (µs since the epoch) of the earliest call: the anchor of the US
    # 30-day periods. None in state written before it was kept: the first minute's start,
    # as periods were anchored then.
    first_at_us: int | None = None
    # The counts of each 30-day period k (from `anchor_us`) holding a call. Kept here, not
    # summed from the buckets: buckets are swept 9 days behind the newest call
    # (core.retention), a period is 30 days. None in state written before they were kept:
    # rebuilt once from the buckets still held.
    periods: dict[int, BucketCounts] | None = field(default_factory=dict)
    watermark: int = -1
    too_late: int = 0
    duplicates: int = 0
    silent_samples: list[tuple[int, str]] = field(default_factory=list)
    abandoned_samples: list[tuple[int, str]] = field(default_factory=list)
    alerts: dict[str, AlertStatus] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "tenant_id": self.tenant_id,
            "profile": self.profile,
            "first_minute": self.first_minute,
            "first_at_us": self.first_at_us,
            "periods": None
            if self.periods is None
            else {str(k): c.to_list() for k, c in sorted(self.periods.items())},
            "newest_minute": self.newest_minute,
            "newest_at_us": (self.newest_at - EPOCH) // timedelta(microseconds=1),
            "totals": self.totals.to_list(),
            "watermark": self.watermark,
            "too_late": self.too_late,
            "duplicates": self.duplicates,
            "silent_samples": [list(s) for s in self.silent_samples],
            "abandoned_samples": [list(s) for s in self.abandoned_samples],
            "alerts": {
                key: [
                    a.id,
                    a.window_key,
                    a.severity,
                    a.state,
                    (a.opened_at - EPOCH) // timedelta(microseconds=1),
                    None
                    if a.resolved_at is None
                    else (a.resolved_at - EPOCH) // timedelta(microseconds=1),
                    *(() if a.closed_end is None else (a.closed_end,)),
                ]
                for key, a in self.alerts.items()
            },
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CampaignState:
        def instant(us: int | None) -> datetime | None:
            return None if us is None else EPOCH + timedelta(microseconds=us)

        alerts = {}
        for key, (aid, wkey, severity, state, opened, resolved, *closed) in raw["alerts"].items():
            opened_at = instant(opened)
            assert opened_at is not None
            alerts[key] = AlertStatus(
                aid, wkey, severity, state, opened_at, instant(resolved), *closed
            )
        newest_at = instant(raw["newest_at_us"])
        assert newest_at is not None
        return cls(
            campaign_id=raw["campaign_id"],
            tenant_id=raw["tenant_id"],
            profile=raw["profile"],
            first_minute=raw["first_minute"],
            first_at_us=raw.get("first_at_us"),
            periods=None
            if raw.get("periods") is None
            else {int(k): BucketCounts.from_list(c) for k, c in raw["periods"].items()},
            newest_minute=raw["newest_minute"],
            newest_at=newest_at,
            totals=BucketCounts.from_list(raw["totals"]),
            watermark=raw["watermark"],
            too_late=raw["too_late"],
            duplicates=raw["duplicates"],
            silent_samples=[(int(m), str(c)) for m, c in raw["silent_samples"]],
            abandoned_samples=[(int(m), str(c)) for m, c in raw["abandoned_samples"]],
            alerts=alerts,
        )

    def copy(self) -> CampaignState:
        """A copy the engine may change without touching this one: its own lists and dicts
        (their items, tuples, counts and alert statuses, are immutable and shared)."""
        return CampaignState(
            campaign_id=self.campaign_id,
            tenant_id=self.tenant_id,
            profile=self.profile,
            first_minute=self.first_minute,
            newest_minute=self.newest_minute,
            newest_at=self.newest_at,
            totals=self.totals,
            first_at_us=self.first_at_us,
            periods=None if self.periods is None else dict(self.periods),
            watermark=self.watermark,
            too_late=self.too_late,
            duplicates=self.duplicates,
            silent_samples=list(self.silent_samples),
            abandoned_samples=list(self.abandoned_samples),
            alerts=dict(self.alerts),
        )

    @property
    def anchor_us(self) -> int:
        """Where the campaign's 30-day periods start (µs since the epoch)."""
        return self.first_minute * MINUTE_US if self.first_at_us is None else self.first_at_us


class StateStore(Protocol):
    """Keyed state the engine reads and writes (faust tables in production)."""

    def get_seen(self, key: str) -> tuple[int, int, int, str] | None:
        """(partition, offset, originated minute, campaign) of the first accepted copy."""

    def put_seen(self, key: str, value: tuple[int, int, int, str], partition: int) -> None: ...

    def get_bucket(self, campaign_id: str, minute: int) -> BucketState | None: ...

    def bucket_minutes(self, campaign_id: str, first: int, last_exclusive: int) -> list[int]:
        """The minutes in [first, last_exclusive) at which the campaign has a bucket,
        ascending (a `windows.MinuteIndex` kept beside the buckets)."""

    def put_bucket(
        self, campaign_id: str, minute: int, state: BucketState, partition: int
    ) -> None: ...

    def get_day_violations(
        self, campaign_id: str, rule_id: str, day: date
    ) -> DayViolations | None: ...

    def put_day_violations(
        self, campaign_id: str, rule_id: str, day: date, state: DayViolations, partition: int
    ) -> None: ...

    def get_campaign(self, campaign_id: str) -> CampaignState | None: ...

    def put_campaign(self, campaign_id: str, state: CampaignState, partition: int) -> None: ...


@dataclass(frozen=True, slots=True)
class CampaignConfig:
    """A campaign's profile as set by PUT /v1/campaigns/{id} (or the default)."""

    profile: Profile
    amd_false_positive_ratio: Fraction = Fraction(0)


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """A minute bucket as published. `boundary_us`: the 30-day period boundary inside the
    minute (µs), if one is; `head` then holds the counts of its calls before it."""

    campaign_id: str
    minute: int
    counts: BucketCounts
    tenant_id: str | None
    profile: str
    boundary_us: int | None = None
    head: BucketCounts = EMPTY


@dataclass(frozen=True, slots=True)
class WindowStats:
    campaign_id: str
    window: str
    start: datetime
    end: datetime
    counts: BucketCounts
    tenant_id: str | None
    profile: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    event: Event
    reason: str
    detail: str


@dataclass(slots=True)
class BatchOutput:
    minute_stats: list[MinuteStats] = field(default_factory=list)
    window_stats: list[WindowStats] = field(default_factory=list)
    alerts: list[AlertUpdate] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    processed: int = 0
    duplicates: int = 0
    too_late: int = 0
    # Calls to forward to the per-callee stage, keyed by (tenant, pseudonymised callee).
    callee_events: list[tuple[str, CalleeCall]] = field(default_factory=list)
    # Calls traced one by one (`CallOutcome.traced`: silent, abandoned, a per-call rule
    # broken), for GET /v1/calls; lockout hits are traced by the lockout stage.
    calls: list[tuple[CallRecord, CallOutcome]] = field(default_factory=list)


def _rebuilt_periods(
    state: CampaignState,
    lookup: Callable[[int], BucketCounts],
    heads: Callable[[int], BucketCounts],
) -> dict[int, BucketCounts]:
    """Every period's counts summed from the buckets, after a backfilled earlier call moved
    the anchor (or for state of an older detector). A call can become the first only while
    the campaign spans less than the lateness (it must be within the lateness of the newest
    call), so then no bucket has been swept yet (core.retention) and the sums are exact."""
    anchor = state.anchor_us
    rebuilt: dict[int, BucketCounts] = {}
    for k in range(period_index(instant_us(state.newest_at), anchor) + 1):
        counts = period_counts(
            k, anchor, lookup, heads, within=(state.first_minute, state.newest_minute)
        )
        if counts != EMPTY:
            rebuilt[k] = counts
    return rebuilt


def callee_state_key(call: CallRecord) -> str:
    """Per-callee state is per tenant (the caller) and pseudonymised callee."""
    return f"{call.tenant_id or ''}\x1f{call.callee_key}"


def has_callee_rules(profile: Profile) -> bool:
    return bool(profile.lockouts or profile.frequency_caps)


def seen_key(call: CallRecord) -> str:
    """Dedup key: `call_id` is unique per tenant (SPEC "Duplicates")."""
    return f"{call.tenant_id or ''}\x1f{call.call_id}"


def _keep_recent(samples: list[tuple[int, str]], sample: tuple[int, str]) -> None:
    """Keep the EVIDENCE_SAMPLES most recent (by originated minute, then call id): the
    choice depends only on the set of calls, never on their arrival order."""
    if sample in samples:
        return
    samples.append(sample)
    samples.sort(reverse=True)
    del samples[EVIDENCE_SAMPLES:]


class _Verdict(Enum):
    """What `Engine._admit` found an event to be."""

    COUNT = "count"  # a call to count
    DUPLICATE = "duplicate"  # its call id was counted from another event
    TOO_LATE = "too_late"  # beyond the lateness behind the campaign's newest call
    APPLIED = "applied"  # fully applied before a restart: publish again what it touched


class _Admitted(NamedTuple):
    verdict: _Verdict
    state: CampaignState  # the campaign as the batch has it so far
    config: CampaignConfig
    seen: tuple[int, int, int, str] | None  # the call id's seen-entry, if any


class _Working:
    """One batch's working records: those read from the store and changed by the batch
    (written back by `Engine._write`), and what the batch touched per campaign."""

    __slots__ = (
        "_config_for",
        "_store",
        "anchors_before",
        "bucket_minutes",
        "buckets",
        "campaigns",
        "lookups",
        "configs",
        "day_violations",
        "partitions",
        "touched_days",
        "touched_periods",
    )

    def __init__(self, store: StateStore, config_for: Callable[[str], CampaignConfig]) -> None:
        self._store = store
        self._config_for = config_for
        self.campaigns: dict[str, CampaignState] = {}
        self.partitions: dict[str, int] = {}
        self.configs: dict[str, CampaignConfig] = {}
        self.buckets: dict[tuple[str, int], BucketState] = {}
        self.bucket_minutes: dict[str, set[int]] = {}  # the minutes of `buckets` per campaign
        self.lookups: dict[str, SparseLookup] = {}
        self.day_violations: dict[tuple[str, str, date], DayViolations] = {}
        self.touched_days: dict[str, set[date]] = {}
        self.touched_periods: dict[str, set[int]] = {}
        self.anchors_before: dict[str, int] = {}  # campaign -> its period anchor before

    def config(self, cid: str) -> CampaignConfig:
        config = self.configs.get(cid)
        if config is None:
            config = self.configs[cid] = self._config_for(cid)
        return config

    def enter(self, state: CampaignState, partition: int) -> None:
        cid = state.campaign_id
        self.campaigns[cid] = state
        self.partitions[cid] = partition
        self.anchors_before.setdefault(cid, state.anchor_us)

    def touch(self, cid: str, day: date, period: int) -> None:
        self.touched_days.setdefault(cid, set()).add(day)
        self.touched_periods.setdefault(cid, set()).add(period)

    def _bucket(self, cid: str, minute: int) -> BucketState | None:
        working = self.buckets.get((cid, minute))
        return working if working is not None else self._store.get_bucket(cid, minute)

    def put_bucket(self, cid: str, minute: int, bucket: BucketState) -> None:
        self.buckets[(cid, minute)] = bucket
        minutes = self.bucket_minutes.get(cid)
        if minutes is None:
            self.bucket_minutes[cid] = {minute}
        else:
            minutes.add(minute)

    def _minutes(self, cid: str, first: int, last_exclusive: int) -> list[int]:
        stored = self._store.bucket_minutes(cid, first, last_exclusive)
        working = self.bucket_minutes.get(cid)
        if not working:
            return stored
        extra = [m for m in working if first <= m < last_exclusive]
        return sorted({*stored, *extra}) if extra else stored

    def counts(self, cid: str) -> SparseLookup:
        """A campaign's bucket counts by minute, as the batch has them, and the minutes
        that hold them."""
        lookup = self.lookups.get(cid)
        if lookup is None:

            def counts(minute: int) -> BucketCounts:
                bucket = self._bucket(cid, minute)
                return EMPTY if bucket is None else bucket.counts

            lookup = self.lookups[cid] = SparseLookup(
                counts, lambda first, last: self._minutes(cid, first, last)
            )
        return lookup

    def heads(self, cid: str) -> Callable[[int], BucketCounts]:
        """A campaign's bucket heads (`BucketState.head`) by minute."""

        def lookup(minute: int) -> BucketCounts:
            bucket = self._bucket(cid, minute)
            return EMPTY if bucket is None else bucket.head

        return lookup


class Engine:
    """Applies batches of events to the state store and says what to publish."""

    def __init__(
        self,
        store: StateStore,
        config_for: Callable[[str], CampaignConfig],
        *,
        lateness: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        if lateness >= PERIOD_30D - timedelta(days=1):
            # A call accepted late can be the campaign's new first call and move every
            # 30-day boundary; under 29 days of lateness no call counted so far can lie
            # in a minute that then holds a new boundary (past the newest call), so the
            # minute heads (`BucketState.head`) never need recounting.
            raise ValueError(f"lateness {lateness} must be under 29 days (US 30-day periods)")
        self._store = store
        self._config_for = config_for
        self._lateness = lateness
        self._clock = clock
        # Caches derived from stored buckets; dropped on rebalance (see reset_caches).
        self._rolling: dict[str, dict[str, RollingSum]] = {}  # campaign -> live window
        self._days: dict[tuple[str, date, str], BucketCounts] = {}
        self._last_emitted: dict[str, tuple[Any, ...]] = {}
        # Per profile: its rolling rules with their judges; per campaign configuration:
        # its AMD ratio (`ByIdentity`).
        self._rolling_groups = ByIdentity(_rolling_rules)
        self._amd_ratio: ByIdentity[CampaignConfig, Fraction] = ByIdentity(
            lambda config: effective_amd_ratio(
                config.amd_false_positive_ratio, config.profile.amd_false_positive_ratio
            )
        )

    def reset_caches(self) -> None:
        """Forget derived sums (call when partitions are reassigned)."""
        self._rolling.clear()
        self._days.clear()
        self._last_emitted.clear()

    # -- processing -------------------------------------------------------------------

    def process(self, events: Sequence[Event]) -> BatchOutput:
        """One batch, in four stages: admit each event (`_admit`: count it, or a
        duplicate, too late, or already applied before a restart), count the admitted
        calls into the batch's working records (`_count`, judging rolling episodes call by
        call), evaluate the windows and per-call alerts the batch touched
        (`_evaluate_batch`), and write the working records back in the order crash
        exactness needs (`_write`: buckets, then day records, then campaign records)."""
        out = BatchOutput()
        self._trace_again(events, out)
        work = _Working(self._store, self._config_for)
        now = self._clock()
        for event in events:
            admitted = self._admit(work, event)
            state = admitted.state
            if admitted.verdict is _Verdict.COUNT:
                self._count(work, event, admitted, now, out)
            elif admitted.verdict is _Verdict.DUPLICATE:
                out.duplicates += 1
                state.duplicates += 1
                state.watermark = event.offset
            elif admitted.verdict is _Verdict.TOO_LATE:
                out.too_late += 1
                cid = state.campaign_id
                out.dead_letters.append(DeadLetter(event, "too_late", self._too_late_detail(cid)))
                state.too_late += 1
                state.watermark = event.offset
            else:
                self._touch_applied(work, event, admitted, out)
        self._evaluate_batch(work, now, out)
        self._write(work, out)
        return out

    def _admit(self, work: _Working, event: Event) -> _Admitted:
        """What to do with one event, judged against the campaign as the batch has it so
        far (dedup, lateness, replay); enters the campaign into the batch."""
        call = event.call
        cid = call.campaign_id
        state = work.campaigns.get(cid) or self._store.get_campaign(cid)
        config = work.config(cid)
        seen = self._store.get_seen(seen_key(call))
        if state is not None and state.watermark >= event.offset:
            work.enter(state, event.partition)
            return _Admitted(_Verdict.APPLIED, state, config, seen)
        if state is None:
            minute = minute_of(call.originated_at)
            state = CampaignState(
                campaign_id=cid,
                tenant_id=call.tenant_id,
                profile=config.profile.name,
                first_minute=minute,
                newest_minute=minute,
                newest_at=call.originated_at,
                first_at_us=instant_us(call.originated_at),
            )
        work.enter(state, event.partition)
        if seen is not None and (seen[0], seen[1]) != (event.partition, event.offset):
            return _Admitted(_Verdict.DUPLICATE, state, config, seen)
        if state.watermark >= 0 and call.originated_at < state.newest_at - self._lateness:
            return _Admitted(_Verdict.TOO_LATE, state, config, seen)
        return _Admitted(_Verdict.COUNT, state, config, seen)

    def _touch_applied(
        self, work: _Working, event: Event, admitted: _Admitted, out: BatchOutput
    ) -> None:
        """An event fully applied before a restart: nothing to count. What it published
        (other topics than the change log, no common order with it) may have been lost with
        the crash, so what it touched is published again from the stored state: its minute
        bucket, day and period, the campaign's windows and alerts (`_evaluate_batch`, as
        for any touched campaign; downstream upserts them), its callee event (the callee
        stage ignores repeats) and, for a call that was never counted nor a duplicate (no
        seen-entry: too late), its dead letter."""
        call, state, seen = event.call, admitted.state, admitted.seen
        cid = state.campaign_id
        if seen is None:
            if call.originated_at < state.newest_at - self._lateness:
                out.dead_letters.append(DeadLetter(event, "too_late", self._too_late_detail(cid)))
            return
        if (seen[0], seen[1]) != (event.partition, event.offset):
            return  # a duplicate: only the campaign's figures changed
        minute = minute_of(call.originated_at)
        bkey = (cid, minute)
        if bkey not in work.buckets:
            stored_bucket = self._store.get_bucket(cid, minute)
            if stored_bucket is not None:
                work.put_bucket(cid, minute, stored_bucket)
        profile = admitted.config.profile
        work.touch(
            cid,
            local_day_of(minute, profile.home_zone),
            period_index(instant_us(call.originated_at), state.anchor_us),
        )
        if has_callee_rules(profile) and call.callee_key:
            outcome = classify(call, profile)
            out.callee_events.append((callee_state_key(call), callee_call(call, outcome)))

    def _count(
        self,
        work: _Working,
        event: Event,
        admitted: _Admitted,
        now: datetime,
        out: BatchOutput,
    ) -> None:
        """Count one admitted call: its minute bucket (unless the bucket already holds it,
        after a restart), its day records, the campaign record, the rolling sums, and the
        rolling episodes judged after it."""
        call, state, config = event.call, admitted.state, admitted.config
        cid = call.campaign_id
        profile = config.profile
        minute = minute_of(call.originated_at)
        lookup = work.counts(cid)
        advanced = minute > state.newest_minute
        if advanced:
            # The campaign's stream passes its newest minute: judge the rolling windows
            # ending with the minutes it skips (before this call counts).
            self._complete_rolling(state, config, minute, lookup, now, out)
        outcome = classify(call, profile)
        out.processed += 1
        if outcome.traced:
            out.calls.append((call, outcome))
        if has_callee_rules(profile) and call.callee_key:
            out.callee_events.append((callee_state_key(call), callee_call(call, outcome)))
        bkey = (cid, minute)
        bucket = work.buckets.get(bkey) or self._store.get_bucket(cid, minute)
        if bucket is None:
            bucket = BucketState(EMPTY, -1)
        call_us = instant_us(call.originated_at)
        anchor = min(state.anchor_us, call_us)  # a call before the first re-anchors
        period = period_index(call_us, anchor)
        day = local_day_of(minute, profile.home_zone)
        if bucket.watermark < event.offset:
            delta = EMPTY.add(outcome)
            boundary = boundary_in(minute, anchor)
            head = bucket.head
            if boundary is not None and call_us < boundary:
                head = head.merge(delta)
            bucket = BucketState(bucket.counts.merge(delta), event.offset, head)
            self._on_bucket_change(cid, minute, day, delta, profile.home_zone)
        work.put_bucket(cid, minute, bucket)
        work.touch(cid, day, period)
        self._count_day_records(work, event, outcome, minute, day)
        self._apply_to_campaign(state, call, outcome, minute, event.offset)
        if state.periods is not None:
            state.periods[period] = state.periods.get(period, EMPTY).add(outcome)
        sums = self._rolling.get(cid)
        if sums is not None:
            for rolling in sums.values():
                rolling.move_end(state.newest_minute, lookup)
        self._judge_rolling(state, config, lookup, now, out, None if advanced else outcome)
        if admitted.seen is None:
            self._store.put_seen(
                seen_key(call), (event.partition, event.offset, minute, cid), event.partition
            )

    def _count_day_records(
        self, work: _Working, event: Event, outcome: CallOutcome, minute: int, day: date
    ) -> None:
        """The call in its day records: per-call rules it broke (or could not be checked
        against) and, as evidence of the day's rate windows, its silent/abandoned
        pseudo-rules "~silent"/"~abandoned" (records like the per-call ones)."""
        cid, call_id = event.call.campaign_id, event.call.call_id
        evidence_of = tuple(
            name
            for name, hit in (("~silent", outcome.silent), ("~abandoned", outcome.abandoned))
            if hit
        )
        for rule_id, verifiable in (
            *((r, True) for r in outcome.violations),
            *((r, False) for r in outcome.unverifiable),
            *((r, True) for r in evidence_of),
        ):
            vkey = (cid, rule_id, day)
            record = work.day_violations.get(vkey) or self._store.get_day_violations(*vkey)
            if record is None:
                record = DayViolations()
            work.day_violations[vkey] = record
            if record.watermark >= event.offset:
                continue
            record.watermark = event.offset
            if verifiable:
                record.count += 1
                _keep_recent(record.samples, (minute, call_id))
            else:
                record.unverifiable += 1
                _keep_recent(record.unverifiable_samples, (minute, call_id))

    def _evaluate_batch(self, work: _Working, now: datetime, out: BatchOutput) -> None:
        """The alerts of everything the batch touched: per-call rules per day, then every
        touched campaign's windows. Changes only the working records."""
        for (cid, rule_id, day), record in work.day_violations.items():
            config = work.configs[cid]
            self._per_call_alerts(cid, rule_id, day, record, config, work.counts(cid), now, out)
        # A day's per-call alerts show the day's attempts as denominator: calls that break
        # no rule still change it, so refresh the day's other alerts (published only when
        # their figures changed). Their records are not rewritten.
        for cid, days in work.touched_days.items():
            config = work.configs[cid]
            for day in days:
                for rule_id in _per_call_rule_info(config.profile):
                    if (cid, rule_id, day) in work.day_violations:
                        continue
                    stored = self._store.get_day_violations(cid, rule_id, day)
                    if stored is not None:
                        self._per_call_alerts(
                            cid, rule_id, day, stored, config, work.counts(cid), now, out
                        )
        for cid, state in work.campaigns.items():
            config = work.configs[cid]
            state.profile = config.profile.name
            anchor_before = work.anchors_before[cid]
            if state.periods is None or state.anchor_us != anchor_before:
                state.periods = _rebuilt_periods(state, work.counts(cid), work.heads(cid))
            periods = self._touched_periods(
                state, anchor_before, work.touched_periods.get(cid, set())
            )
            self._evaluate(
                state,
                config,
                work.counts(cid),
                work.touched_days.get(cid, set()),
                periods,
                now,
                out,
                functools.partial(self._day_evidence, cid, working=work.day_violations),
            )

    def _write(self, work: _Working, out: BatchOutput) -> None:
        """Write the batch's records back, buckets first and each campaign record last
        (module docstring: a restart recovers a prefix of this order), and publish the
        minute buckets as they now stand."""
        for (cid, minute), bucket in work.buckets.items():
            state = work.campaigns[cid]
            self._store.put_bucket(cid, minute, bucket, work.partitions[cid])
            out.minute_stats.append(
                MinuteStats(
                    cid,
                    minute,
                    bucket.counts,
                    state.tenant_id,
                    state.profile,
                    boundary_in(minute, state.anchor_us),
                    bucket.head,
                )
            )
        for (cid, rule_id, day), record in work.day_violations.items():
            self._store.put_day_violations(cid, rule_id, day, record, work.partitions[cid])
        for cid, state in work.campaigns.items():
            self._store.put_campaign(cid, state, work.partitions[cid])

    def _trace_again(self, events: Sequence[Event], out: BatchOutput) -> None:
        """Traces of calls fully applied before a restart (campaign watermark at or past
        the event, the seen-entry naming this very event): they may have been lost with the
        crash (another topic than the change log), so they go out again; the api merges
        them into the same rows. Reads the state as stored before this batch."""
        watermarks: dict[str, int] = {}
        for event in events:
            call = event.call
            cid = call.campaign_id
            if cid not in watermarks:
                stored = self._store.get_campaign(cid)
                watermarks[cid] = -1 if stored is None else stored.watermark
            if watermarks[cid] < event.offset:
                continue
            seen = self._store.get_seen(seen_key(call))
            if seen is None or (seen[0], seen[1]) != (event.partition, event.offset):
                continue
            outcome = classify(call, self._config_for(cid).profile)
            if outcome.traced:
                out.calls.append((call, outcome))

    def process_lockout_violations(
        self, events: Sequence[tuple[int, int, LockoutViolation]]
    ) -> BatchOutput:
        """Count lockout and frequency-cap violations found by the callee stage per rule,
        campaign and calendar day of the profile's zone, and alert like per-call rules.
        `events` are (partition, offset, violation) of the violations topic, keyed by
        campaign like the CDR topic (so a campaign's records stay in its partition)."""
        out = BatchOutput()
        records: dict[tuple[str, str, date], tuple[DayViolations, int]] = {}
        configs: dict[str, CampaignConfig] = {}
        for partition, _offset, violation in events:
            cid = violation.campaign_id
            config = configs.get(cid) or configs.setdefault(cid, self._config_for(cid))
            minute = minute_of(violation.originated_at)
            vkey = (cid, violation.rule_id, local_day_of(minute, config.profile.home_zone))
            found = records.get(vkey)
            record = found[0] if found else self._store.get_day_violations(*vkey) or DayViolations()
            records[vkey] = (record, partition)
            if violation.call_id in record.call_ids:
                continue  # sent again by the callee stage after a restart
            record.call_ids.append(violation.call_id)
            record.count += 1
            _keep_recent(record.samples, (minute, violation.call_id))
        now = self._clock()
        stored = _Working(self._store, self._config_for)  # the store's buckets, as they are
        for (cid, rule_id, day), (record, partition) in records.items():
            lookup = stored.counts(cid)
            self._per_call_alerts(cid, rule_id, day, record, configs[cid], lookup, now, out)
            self._store.put_day_violations(cid, rule_id, day, record, partition)
        return out

    def _day_evidence(
        self,
        cid: str,
        metric: str,
        days: list[date],
        working: dict[tuple[str, str, date], DayViolations],
    ) -> list[str]:
        """The most recent silent/abandoned call ids of `days` (deterministic: by originated
        minute then call id, whatever the arrival order)."""
        merged: list[tuple[int, str]] = []
        for day in days:
            key = (cid, f"~{metric}", day)
            record = working.get(key) or self._store.get_day_violations(*key)
            if record is not None:
                merged.extend(record.samples)
        merged.sort(reverse=True)
        return [c for _m, c in merged[:EVIDENCE_SAMPLES]]

    def _per_call_alerts(
        self,
        cid: str,
        rule_id: str,
        day: date,
        record: DayViolations,
        config: CampaignConfig,
        lookup: Callable[[int], BucketCounts],
        now: datetime,
        out: BatchOutput,
    ) -> None:
        """SPEC "Alert lifecycle": per-call violations alert per rule, campaign and calendar
        day in the profile's zone, with the count and sample call ids; `violation` severity
        except advisory rules. Unverifiable calls alert as a warning of their own rule
        (`<rule>-unverifiable`). A day's alert never resolves: it is a record."""
        profile = config.profile
        rule = _per_call_rule_info(profile).get(rule_id)
        if rule is None:
            return
        first, last = local_day_bounds(day, profile.home_zone)
        attempts = self._day_counts(cid, day, profile.home_zone, lookup).attempts
        now_us = (now - EPOCH) // timedelta(microseconds=1)
        for suffix, count, samples, opened_field in (
            ("", record.count, record.samples, "opened_at_us"),
            (
                "-unverifiable",
                record.unverifiable,
                record.unverifiable_samples,
                "unverifiable_opened_at_us",
            ),
        ):
            if count == 0:
                continue
            opened_us = getattr(record, opened_field)
            if opened_us is None:
                opened_us = now_us
                setattr(record, opened_field, opened_us)
            alert_rule = rule_id + suffix
            aid = alert_id(alert_rule, cid, day.isoformat())
            evidence = [c for _m, c in samples][:EVIDENCE_SAMPLES]
            reference = rule.reference + (
                "" if not suffix else " (not verifiable: the dialer did not report it)"
            )
            severity: Severity = "warning" if rule.advisory or suffix else "violation"
            if not self._changed(aid, (count, attempts, tuple(evidence))):
                continue
            out.alerts.append(
                AlertUpdate(
                    id=aid,
                    rule=alert_rule,
                    profile=profile.name,
                    campaign_id=cid,
                    severity=severity,
                    state="firing",
                    value=None if attempts == 0 else count / attempts,
                    threshold=0.0,
                    numerator=count,
                    denominator=attempts,
                    window={"start": minute_start(first), "end": minute_start(last)},
                    opened_at=EPOCH + timedelta(microseconds=opened_us),
                    resolved_at=None,
                    evidence={"call_ids": evidence},
                    reference=reference,
                )
            )

    def _apply_to_campaign(
        self, state: CampaignState, call: CallRecord, outcome: CallOutcome, minute: int, offset: int
    ) -> None:
        state.totals = state.totals.add(outcome)
        state.watermark = offset
        state.first_minute = min(state.first_minute, minute)
        state.first_at_us = min(state.anchor_us, instant_us(call.originated_at))
        if call.originated_at > state.newest_at:
            state.newest_at = call.originated_at
        state.newest_minute = max(state.newest_minute, minute)
        if state.tenant_id is None and call.tenant_id is not None:
            state.tenant_id = call.tenant_id
        if outcome.silent:
            _keep_recent(state.silent_samples, (minute, call.call_id))
        if outcome.abandoned:
            _keep_recent(state.abandoned_samples, (minute, call.call_id))

    def _too_late_detail(self, cid: str) -> str:
        return (
            f"originated_at more than {self._lateness} before the newest call "
            f"already accepted for campaign {cid}"
        )

    def _on_bucket_change(
        self, cid: str, minute: int, day: date, delta: BucketCounts, zone: str
    ) -> None:
        """Keep the cached sums over `minute` (of local `day`) right (`delta`: one call)."""
        sums = self._rolling.get(cid)
        if sums is not None:
            for rolling in sums.values():
                rolling.on_bucket_change(minute, delta)
        day_key = (cid, day, zone)
        cached = self._days.get(day_key)
        if cached is not None:
            self._days[day_key] = cached.merge(delta)

    @staticmethod
    def _touched_periods(state: CampaignState, anchor_before: int, periods: set[int]) -> list[int]:
        """Periods to re-evaluate: those the batch's calls fall in; all of them when a
        backfilled earlier call moved the anchor (the alerts are amended in place)."""
        if state.anchor_us != anchor_before:
            newest = period_index(instant_us(state.newest_at), state.anchor_us)
            return list(range(newest + 1))
        return sorted(periods)

    # -- evaluation -------------------------------------------------------------------

    def _rolling_counts(
        self, cid: str, name: str, newest: int, lookup: Callable[[int], BucketCounts]
    ) -> RollingSum:
        sums = self._rolling.get(cid)
        if sums is None:
            sums = self._rolling[cid] = {}
        rolling = sums.get(name)
        if rolling is None:
            rolling = sums[name] = RollingSum(LIVE_ROLLING[name], newest, lookup)
        else:
            rolling.move_end(newest, lookup)
        return rolling

    def _day_counts(
        self, cid: str, day: date, zone: str, lookup: Callable[[int], BucketCounts]
    ) -> BucketCounts:
        key = (cid, day, zone)
        cached = self._days.get(key)
        if cached is None:
            first, last = local_day_bounds(day, zone)
            cached = self._days[key] = sum_buckets(lookup, first, last)
            if len(self._days) > 50_000:
                self._days.clear()
                self._days[key] = cached
        return cached

    def _evaluate(
        self,
        state: CampaignState,
        config: CampaignConfig,
        lookup: Callable[[int], BucketCounts],
        days: set[date],
        periods: list[int],
        now: datetime,
        out: BatchOutput,
        day_evidence: Callable[[str, list[date]], list[str]],
    ) -> None:
        """A touched campaign at the end of a batch: its live windows published, then
        every enabled rate rule judged over the windows of its kind the batch touched (an
        episodic kind's open or just resolved episode shows its latest figures)."""
        profile = config.profile
        cid = state.campaign_id
        self._window_stats(state, profile, lookup, out)
        touch = BatchTouch(
            first_minute=state.first_minute,
            newest_minute=state.newest_minute,
            totals=state.totals,
            zone=profile.home_zone,
            days=days,
            day_counts=lambda day: self._day_counts(cid, day, profile.home_zone, lookup),
            anchor_us=state.anchor_us,
            periods=periods,
            period_counts=lambda k: state.periods.get(k, EMPTY) if state.periods else EMPTY,
        )
        windows: list[tuple[RateRule, WindowKind, Window]] = []
        for rule in (*profile.rate_rules, *profile.early_warning):
            if not rule.enabled:
                continue
            kind = WINDOW_KINDS[rule.window]
            if kind.episodic:
                # Episodes open and resolve call by call (`_judge_rolling`); at the end
                # of a batch an open one shows the window ending with the newest minute,
                # and a resolved one its final figures (once per process: for a restart
                # whose first incarnation's messages were lost).
                self._rolling_at_batch_end(state, config, rule, kind, lookup, out)
            else:
                windows.extend((rule, kind, window) for window in kind.touched(touch))
        ratio = self._amd_ratio(config)
        for rule, kind, window in windows:
            self._judge_window(state, config, rule, kind, window, ratio, now, out, day_evidence)
        self._trim_day_alerts(state)

    def _window_stats(
        self,
        state: CampaignState,
        profile: Profile,
        lookup: Callable[[int], BucketCounts],
        out: BatchOutput,
    ) -> None:
        """The campaign's live windows as published: cumulative and every live rolling
        sum, all ending with its newest minute."""
        cid = state.campaign_id
        end = minute_start(state.newest_minute + 1)
        out.window_stats.append(
            WindowStats(
                cid,
                "cumulative",
                minute_start(state.first_minute),
                end,
                state.totals,
                state.tenant_id,
                profile.name,
            )
        )
        for name in LIVE_ROLLING:
            rolling = self._rolling_counts(cid, name, state.newest_minute, lookup)
            out.window_stats.append(
                WindowStats(
                    cid,
                    name,
                    minute_start(rolling.first),
                    end,
                    rolling.counts,
                    state.tenant_id,
                    profile.name,
                )
            )

    def _judge_window(
        self,
        state: CampaignState,
        config: CampaignConfig,
        rule: RateRule,
        kind: WindowKind,
        window: Window,
        ratio: Fraction,
        now: datetime,
        out: BatchOutput,
        day_evidence: Callable[[str, list[date]], list[str]],
    ) -> None:
        """One rule over one window: its alert advanced (`alerting.advance`) and, when
        that changed anything, published with its evidence."""
        cid = state.campaign_id
        numerator, denominator = rate_terms(rule.metric, window.counts, ratio)
        level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
        # Day and period alerts are one per window; the others one per rule (episodes).
        scope = kind.alert_scope
        state_key = rule.id if scope is None else f"{rule.id}|{scope}:{window.key}"
        previous = state.alerts.get(state_key)
        status = advance(previous, level, alert_id(rule.id, cid, window.key), window.key, now)
        if status is None:
            return
        state.alerts[state_key] = status
        evidence_days = kind.evidence_days(window, config.profile.home_zone)
        if evidence_days is not None:
            evidence = day_evidence(rule.metric, evidence_days)
        else:
            samples = state.silent_samples if rule.metric == "silent" else state.abandoned_samples
            first_minute, end_minute = minute_of(window.start), minute_of(window.end)
            evidence = [c for m, c in samples if first_minute <= m < end_minute]
        measurement = Measurement(
            rule.id, window.key, window.start, window.end, numerator, denominator, rule.cap, level
        )
        fingerprint = (status.severity, status.state, numerator, denominator, window.end)
        if self._changed(status.id, (*fingerprint, tuple(evidence))):
            out.alerts.append(
                _alert_payload(rule, config.profile.name, cid, status, measurement, evidence)
            )

    def _changed(self, aid: str, fingerprint: tuple[Any, ...]) -> bool:
        """Whether alert `aid` has figures (`fingerprint`) this process has not published
        yet, noting them: an alert goes out when its state, severity, window or figures
        change, not once per batch that touches it."""
        if self._last_emitted.get(aid) == fingerprint:
            return False
        self._last_emitted[aid] = fingerprint
        return True

    # -- rolling windows: episodes judged call by call ----------------------------------
    #
    # A rolling window (early warnings 15 min, 1 h, 24 h; the UK's any 24 hours) is judged
    # after every call the campaign counts, over the window ending with its newest minute;
    # when the newest minute jumps ahead, the windows ending with the minutes in between are
    # judged first, wherever a bucket left them. An episode opens at the first judged
    # window that breaches (its id is that window's start, SPEC "Remaining details") and
    # resolves at the first that falls below the warning level. The calls of one campaign
    # come in partition order, so the episodes are a function of that order alone, never of
    # where batches start and end: a restarted worker re-reads other batches than the live
    # run did and must find the episodes the live run already published
    # (tests/unit/test_engine.py, batch boundaries). Only transitions are published during
    # the batch; an open episode's latest figures go out once at its end.

    def _complete_rolling(
        self,
        state: CampaignState,
        config: CampaignConfig,
        minute: int,
        lookup: Callable[[int], BucketCounts],
        now: datetime,
        out: BatchOutput,
    ) -> None:
        """Judge the rolling rules at the minutes between the campaign's newest and
        `minute` (exclusive) whose window lost a bucket."""
        amd = self._amd_ratio(config)
        for length_name, group in self._rolling_groups(config.profile):
            rolling = self._rolling_counts(
                state.campaign_id, length_name, state.newest_minute, lookup
            )
            for end in rolling.step_to(minute - 1, lookup):
                for rule, judge in group:
                    level = judge.level(rolling.counts, amd)
                    self._rolling_transition(state, config, rule, level, rolling, end, now, out)

    def _judge_rolling(
        self,
        state: CampaignState,
        config: CampaignConfig,
        lookup: Callable[[int], BucketCounts],
        now: datetime,
        out: BatchOutput,
        counted: CallOutcome | None,
    ) -> None:
        """Judge the rolling rules over the windows ending with the newest minute after
        `counted` was counted (None: the window moved). A call that moves neither term of a
        rule's rate leaves its level where it was: that rule is not judged again."""
        groups = self._rolling_groups(config.profile)
        if not groups:
            return
        amd = self._amd_ratio(config)
        for length_name, group in groups:
            rolling = self._rolling_counts(
                state.campaign_id, length_name, state.newest_minute, lookup
            )
            for rule, judge in group:
                if counted is None or _moves_rate(rule.metric, counted):
                    level = judge.level(rolling.counts, amd)
                    self._rolling_transition(
                        state, config, rule, level, rolling, rolling.end, now, out
                    )

    def _rolling_transition(
        self,
        state: CampaignState,
        config: CampaignConfig,
        rule: RateRule,
        level: Level,
        rolling: RollingSum,
        end: int,
        now: datetime,
        out: BatchOutput,
    ) -> None:
        previous = state.alerts.get(rule.id)
        breach = level in ("warning", "violation")
        if previous is None or previous.state != "firing":
            if not breach:
                return  # nothing open, nothing to open: the common case
        elif breach and previous.severity == level:
            return  # the open episode stays as it is
        first = end - rolling.length + 1
        window_key = minute_start(first).isoformat()
        status = advance(
            previous, level, alert_id(rule.id, state.campaign_id, window_key), window_key, now
        )
        if status is None or status == previous:
            return
        if status.state == "resolved":
            status = replace(status, closed_end=end)
        state.alerts[rule.id] = status
        self._emit_rolling(state, config, rule, status, first, end, rolling.counts, out)

    def _rolling_at_batch_end(
        self,
        state: CampaignState,
        config: CampaignConfig,
        rule: RateRule,
        kind: WindowKind,
        lookup: Callable[[int], BucketCounts],
        out: BatchOutput,
    ) -> None:
        status = state.alerts.get(rule.id)
        length = kind.length_minutes
        if status is None or length is None:
            return
        if status.state == "firing":
            rolling = self._rolling_counts(
                state.campaign_id, kind.sample, state.newest_minute, lookup
            )
            end, counts = rolling.end, rolling.counts
        elif status.closed_end is not None and status.id not in self._last_emitted:
            end = status.closed_end
            counts = sum_buckets(lookup, end - length + 1, end + 1)
        else:
            return
        self._emit_rolling(state, config, rule, status, end - length + 1, end, counts, out)

    def _emit_rolling(
        self,
        state: CampaignState,
        config: CampaignConfig,
        rule: RateRule,
        status: AlertStatus,
        first: int,
        end: int,
        counts: BucketCounts,
        out: BatchOutput,
    ) -> None:
        numerator, denominator = rate_terms(rule.metric, counts, self._amd_ratio(config))
        level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
        start, stop = minute_start(first), minute_start(end + 1)
        measurement = Measurement(
            rule.id, status.window_key, start, stop, numerator, denominator, rule.cap, level
        )
        samples = state.silent_samples if rule.metric == "silent" else state.abandoned_samples
        evidence = [c for m, c in samples if first <= m <= end]
        fingerprint = (status.severity, status.state, numerator, denominator, stop)
        if self._changed(status.id, (*fingerprint, tuple(evidence))):
            out.alerts.append(
                _alert_payload(
                    rule, config.profile.name, state.campaign_id, status, measurement, evidence
                )
            )

    @staticmethod
    def _trim_day_alerts(state: CampaignState) -> None:
        """Closed day windows keep their final state in the alert store; the campaign
        record keeps only the most recent ones it can still amend (late data)."""
        day_keys = sorted(k for k in state.alerts if "|day:" in k)
        for key in day_keys[:-16]:
            del state.alerts[key]


def _number(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


def _alert_payload(
    rule: RateRule,
    profile: str,
    campaign_id: str,
    status: AlertStatus,
    m: Measurement,
    evidence: list[str],
) -> AlertUpdate:
    value = m.value
    return AlertUpdate(
        id=status.id,
        rule=rule.id,
        profile=profile,
        campaign_id=campaign_id,
        severity=status.severity,
        state=status.state,
        value=None if value is None else float(value),
        threshold=float(rule.cap),
        numerator=_number(m.numerator),
        denominator=_number(m.denominator),
        window={"start": m.start, "end": m.end},
        opened_at=status.opened_at,
        resolved_at=status.resolved_at,
        evidence={"call_ids": evidence[:EVIDENCE_SAMPLES]},
        reference=rule.reference,
    )


def _moves_rate(metric: str, outcome: CallOutcome) -> bool:
    """Whether counting `outcome` changes the numerator or denominator of `metric`."""
    if metric == "silent":
        return outcome.silent or outcome.answered_by_person
    if metric == "abandoned":
        return outcome.abandoned or outcome.answered_by_person or outcome.amd_machine
    return True


_RollingGroups = tuple[tuple[str, tuple[tuple[RateRule, RateJudge], ...]], ...]
_Key = TypeVar("_Key")
_Derived = TypeVar("_Derived")


class ByIdentity(Generic[_Key, _Derived]):
    """What `build` derives from an immutable object (a profile, a campaign's settings),
    looked up by the object's identity: hashing a profile (a deep frozen dataclass, with
    Fractions) cost more than what is derived from it, 9 % of the engine when an
    `lru_cache` did it for every touched day. Each entry keeps its object, so its id is not
    reused while the entry lives; past `limit` entries (settings changed that often) the
    cache starts over."""

    __slots__ = ("_build", "_held", "_limit")

    def __init__(self, build: Callable[[_Key], _Derived], limit: int = 20_000) -> None:
        self._build = build
        self._held: dict[int, tuple[_Key, _Derived]] = {}
        self._limit = limit

    def __call__(self, obj: _Key) -> _Derived:
        held = self._held.get(id(obj))
        if held is None or held[0] is not obj:
            if len(self._held) > self._limit:
                self._held.clear()
            held = self._held[id(obj)] = (obj, self._build(obj))
        return held[1]


def rolling_rule_ids(profile: Profile) -> frozenset[str]:
    """Ids of a profile's rules judged over rolling windows: at most one open episode per
    campaign each, episodes following one another (the api relies on it)."""
    return frozenset(rule.id for _length, rules in _rolling_rules(profile) for rule, _ in rules)


def _rolling_rules(profile: Profile) -> _RollingGroups:
    """A profile's enabled rolling rules with their judges, grouped by the live rolling
    window (`windows.LIVE_ROLLING`) they are judged over."""
    grouped: dict[str, list[tuple[RateRule, RateJudge]]] = {}
    for rule in (*profile.rate_rules, *profile.early_warning):
        kind = WINDOW_KINDS[rule.window]
        if rule.enabled and kind.episodic:
            judge = RateJudge.of(rule.metric, rule.cap, rule.warning_fraction, rule.min_sample)
            grouped.setdefault(kind.sample, []).append((rule, judge))
    return tuple((length, tuple(rules)) for length, rules in grouped.items())


@dataclass(frozen=True, slots=True)
class _RuleInfo:
    advisory: bool
    reference: str


def _rule_info(profile: Profile) -> dict[str, _RuleInfo]:
    """Per-call, lockout and frequency-cap rules of a profile by id (they alert alike)."""
    info = {r.id: _RuleInfo(r.advisory, r.reference) for r in profile.per_call_rules}
    info.update({r.id: _RuleInfo(False, r.reference) for r in profile.lockouts})
    info.update({r.id: _RuleInfo(False, r.reference) for r in profile.frequency_caps})
    return info


# Runs for every touched day of every batch: derived once per profile object.
_per_call_rule_info = ByIdentity(_rule_info)
