"""The api's Prometheus metrics, all on one injected CollectorRegistry (STYLE habit 8).

Figures come from the store at scrape time (`ApiMetrics.refresh`), through one custom
collector, so every value is exactly what the store holds:

- `cdrwatch_campaign_rate{tenant,campaign,profile,metric,window}` (gauge): silent,
  abandoned and out_of_hours rates of each live window the detector publishes (`window` is the stats
  header: cumulative, 15m, 1h, 24h, ...); absent while the rate's denominator is 0.
- `cdrwatch_campaign_calls_total{tenant,campaign,outcome}` (counter): the campaign's
  totals from its `cumulative` window; they only grow.
- `cdrwatch_alerts_firing{tenant,rule,severity}` (gauge): alerts in state firing.
- `cdrwatch_campaign_cap`, `cdrwatch_campaign_verdict`, `cdrwatch_campaign_headroom`
  `{tenant,campaign,profile,rule,metric,window,kind}` (gauges): for every enabled rate rule
  of the campaign's profile (with its overrides, as the compliance view) whose window the
  detector publishes live — `cumulative`, the early-warning `15m`/`1h`/`24h` (`kind`
  `early_warning`) and the UK `sliding_24h` (the current 24 h, which the detector alerts
  on), and the current calendar day in the profile's zone (UK, `it` optional daily) and
  current 30-day period (US), summed from the stored minute buckets — the cap (fraction),
  the verdict of `rules.assess` on that window's counts (the
  detector's own function and figures: 0 insufficient, below the minimum sample; 1 ok;
  2 warning, at or above 80 % of the cap; 3 violation, above the cap or certain below the
  sample) and `rules.headroom`, the silent/abandoned calls left before the verdict becomes
  violation (+Inf when the cap is 100 %). `window` is the rule's window name, `kind` is
  `regulatory` or `early_warning`. A profile without the rule has no series, so alert
  rules need no hard-coded cap or profile. Day and period windows are the ones holding
  the campaign's newest call; earlier days and periods are in
  `GET /v1/campaigns/{id}/compliance` and the detector's alerts. US periods start at the
  campaign's exact first call, as in the compliance view (`compliance.period_anchor`).
- `cdrwatch_campaign_last_cdr_timestamp_seconds{tenant,campaign}` (gauge): the
  `originated_at` of the campaign's newest counted call, to the minute (the start of its
  minute bucket; event time), for stalled-feed alerts.
- `cdrwatch_detector_lag_seconds` (gauge): seconds between now and the broker timestamp of
  the newest alerts/stats record this api consumed, i.e. how stale the figures served are;
  it grows while the detector is stalled, behind, or idle. Absent until a record arrived.

/metrics needs a viewer token (routes/health.py); a tenant-bound token gets its tenant's
series only (`ApiMetrics.exposition`). Ids are validated at ingest (printable, no `/`), so
no control character reaches a label.

Campaign labels are capped at `campaign_cap` (counted over (tenant, campaign)): the
campaigns seen first keep their label (so a series never changes label), the rest are
folded into `campaign="_other"` of their tenant, whose rates are computed from the summed
counts; its verdict is the worst of the folded campaigns' (per profile, rule and window),
its headroom the smallest, its cap present only when they all share one, and its last CDR
time the newest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.stats_v1 import COUNT_FIELDS
from services.api.clock import Clock
from services.api.compliance import PeriodAnchor, period_anchor
from services.api.store import AlertStore, MetricsSnapshot, WindowSample
from services.detector.core.model import BucketCounts
from services.detector.core.profiles import (
    Profile,
    ProfileError,
    load_profile,
)
from services.detector.core.rules import assess, effective_amd_ratio, headroom, rate_terms
from services.detector.core.windows import (
    WINDOW_KINDS,
    WindowKind,
    instant_us,
    minute_of,
    minute_start,
)

OTHER = "_other"
CALL_OUTCOMES = (
    "attempts",
    "answered_by_person",
    "silent",
    "abandoned",
    "out_of_hours",
    "short_ring",
    "amd_machine",
)
# metric label -> (numerator count, denominator count), as SPEC "Rates and thresholds".
RATES = {
    "silent": ("silent", "answered_by_person"),
    "abandoned": ("abandoned", "answered_by_person"),
    "out_of_hours": ("out_of_hours", "attempts"),
}
CUMULATIVE = "cumulative"
# The verdict gauge's values, ordered by gravity (so `max` and `>= 2` mean what they say).
VERDICT_CODES = {"insufficient": 0, "ok": 1, "warning": 2, "violation": 3}
# A rule's window -> the window sample it is judged on (`WindowKind.sample`): a live window
# the detector publishes (stats header), or the current day or period summed from the
# minute buckets.
WINDOW_OF_RULE = {name: kind.sample for name, kind in WINDOW_KINDS.items()}
CURRENT_DAY = WINDOW_KINDS["calendar_day"].sample  # the campaign's current local day
CURRENT_PERIOD = WINDOW_KINDS["period_30d"].sample  # the campaign's current 30-day period
RULE_LABELS = ["tenant", "campaign", "profile", "rule", "metric", "window", "kind"]
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class RuleState:
    """One rate rule of a campaign over its live window: cap, verdict code, headroom."""

    cap: Fraction
    verdict: int
    headroom: float  # +Inf: unbounded


def rule_states(
    sample: WindowSample, profile: Profile
) -> dict[tuple[str, str, str, str], RuleState]:
    """(rule id, metric, rule window, kind) -> state, for every enabled rate rule of
    `profile` evaluated on the live window `sample` holds (the detector's `assess` and
    `headroom` on the same counts and AMD ratio)."""
    counts = BucketCounts(**{name: sample.counts.get(name, 0) for name in COUNT_FIELDS})
    ratio = effective_amd_ratio(
        Fraction(str(sample.amd_false_positive_ratio or 0)), profile.amd_false_positive_ratio
    )
    states: dict[tuple[str, str, str, str], RuleState] = {}
    kinds = (("regulatory", profile.rate_rules), ("early_warning", profile.early_warning))
    for kind, rules in kinds:
        for rule in rules:
            if not rule.enabled or WINDOW_OF_RULE.get(rule.window) != sample.window:
                continue
            numerator, denominator = rate_terms(rule.metric, counts, ratio)
            level = assess(numerator, denominator, rule.cap, rule.warning_fraction, rule.min_sample)
            room = headroom(numerator, denominator, rule.cap, rule.min_sample)
            states[(rule.id, rule.metric, rule.window, kind)] = RuleState(
                rule.cap, VERDICT_CODES[level], float("inf") if room < 0 else float(room)
            )
    return states


def current_windows(
    cumulative: WindowSample, profile: Profile, anchor: PeriodAnchor | None = None
) -> list[tuple[str, datetime, datetime]]:
    """The windows `profile`'s enabled rules judge that the api sums from minute buckets
    (`_summed_kinds`: the calendar day and the 30-day period), each the one holding the
    campaign's newest minute (`WindowKind.holding`): (sample window name, start, end).
    The period is anchored as in the compliance view (`anchor`; None: at the first
    minute). `cumulative` is the campaign's cumulative window sample."""
    if cumulative.start is None or cumulative.end is None:
        return []
    first, newest = minute_of(cumulative.start), minute_of(cumulative.end) - 1
    first_call = None if anchor is None else anchor.first_call
    first_call_us = None if first_call is None else instant_us(first_call)
    return [
        (
            kind.sample,
            *kind.holding(
                newest, first_minute=first, zone=profile.home_zone, first_call_us=first_call_us
            ),
        )
        for kind in _summed_kinds(profile)
    ]


def _summed_kinds(profile: Profile) -> list[WindowKind]:
    """The window kinds of `profile`'s enabled rate rules whose samples the detector does
    not publish live, one per sample, in `WINDOW_KINDS` order."""
    used = {rule.window for rule in profile.rate_rules if rule.enabled}
    kinds: dict[str, WindowKind] = {}
    for name, kind in WINDOW_KINDS.items():
        if name in used and not kind.published:
            kinds.setdefault(kind.sample, kind)
    return list(kinds.values())


def _period_edges(
    whole_minutes: Mapping[str, int], first_head: Mapping[str, int], last_head: Mapping[str, int]
) -> dict[str, int]:
    """A period from the sum of its whole minutes [first, last): less the calls of its first
    minute before its start, plus those of the minute holding its end before the end."""
    return {
        name: whole_minutes.get(name, 0) - first_head.get(name, 0) + last_head.get(name, 0)
        for name in COUNT_FIELDS
    }


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for name, value in counts.items():
        into[name] = into.get(name, 0) + value


class _StoreCollector(Collector):
    """The store's figures; `tenant` set: only that tenant's series (the labels and the
    `_other` folding are those of the whole snapshot, so a series never changes label
    with the viewer)."""

    def __init__(
        self, metrics: ApiMetrics, campaign_cap: int, clock: Clock, tenant: str | None = None
    ) -> None:
        self._metrics = metrics
        self._cap = campaign_cap
        self._clock = clock
        self._tenant = tenant

    def collect(self) -> Iterator[Metric]:
        snapshot = self._metrics.snapshot
        rates = GaugeMetricFamily(
            "cdrwatch_campaign_rate",
            "Rate of a campaign's live window: silent and abandoned over calls answered by a "
            "person, out_of_hours over attempts (fraction, 0-1).",
            labels=["tenant", "campaign", "profile", "metric", "window"],
        )
        calls = CounterMetricFamily(
            "cdrwatch_campaign_calls",
            "Calls of a campaign by outcome, over the whole campaign (cumulative window).",
            labels=["tenant", "campaign", "outcome"],
        )
        # Sum per (tenant, label, profile, window) so that folded campaigns add up.
        folded: dict[tuple[str, str, str, str], dict[str, int]] = {}
        labelled: set[tuple[str, str]] = set()
        for sample in snapshot.windows:
            key = (sample.tenant_id, sample.campaign_id)
            if key not in labelled and len(labelled) < self._cap:
                labelled.add(key)
            if self._tenant is not None and sample.tenant_id != self._tenant:
                continue
            label = sample.campaign_id if key in labelled else OTHER
            group = (sample.tenant_id, label, sample.profile, sample.window)
            _add(folded.setdefault(group, {}), sample.counts)
        totals: dict[tuple[str, str], dict[str, int]] = {}
        for (tenant, label, profile, window), counts in folded.items():
            for metric, (numerator, denominator) in RATES.items():
                if counts.get(denominator, 0) > 0:
                    value = counts.get(numerator, 0) / counts[denominator]
                    rates.add_metric([tenant, label, profile, metric, window], value)
            if window == CUMULATIVE:
                _add(totals.setdefault((tenant, label), {}), counts)
        for (tenant, label), counts in totals.items():
            for outcome in CALL_OUTCOMES:
                calls.add_metric([tenant, label, outcome], counts.get(outcome, 0))
        firing = GaugeMetricFamily(
            "cdrwatch_alerts_firing",
            "Alerts in state firing, by tenant, rule and severity.",
            labels=["tenant", "rule", "severity"],
        )
        for (tenant, rule, severity), count in sorted(snapshot.firing.items()):
            if self._tenant is None or tenant == self._tenant:
                firing.add_metric([tenant, rule, severity], count)
        yield rates
        yield calls
        yield from self._rule_families([*snapshot.windows, *self._metrics.current])
        yield firing
        newest = self._metrics.newest_output_at()
        if newest is not None:
            yield GaugeMetricFamily(
                "cdrwatch_detector_lag_seconds",
                "Seconds since the newest detector output (alerts or stats record) the api "
                "consumed was produced.",
                value=max(0.0, (self._clock() - newest).total_seconds()),
            )

    def _rule_families(self, windows: list[WindowSample]) -> Iterator[Metric]:
        caps = GaugeMetricFamily(
            "cdrwatch_campaign_cap",
            "Cap of a campaign's rate rule (fraction, 0-1), from its profile and overrides.",
            labels=RULE_LABELS,
        )
        verdicts = GaugeMetricFamily(
            "cdrwatch_campaign_verdict",
            "Verdict of a campaign's rate rule over its live window: 0 insufficient (below "
            "the minimum sample), 1 ok, 2 warning, 3 violation.",
            labels=RULE_LABELS,
        )
        rooms = GaugeMetricFamily(
            "cdrwatch_campaign_headroom",
            "Silent/abandoned calls a campaign's rate rule window can take before its verdict "
            "becomes violation (below the minimum sample: before the certain violation).",
            labels=RULE_LABELS,
        )
        last_cdr = GaugeMetricFamily(
            "cdrwatch_campaign_last_cdr_timestamp_seconds",
            "Unix time of the campaign's newest counted call (originated_at, to the minute).",
            labels=["tenant", "campaign"],
        )
        labelled: set[tuple[str, str]] = set()
        merged: dict[tuple[str, ...], tuple[set[Fraction], int, float]] = {}
        newest: dict[tuple[str, str], float] = {}
        for sample in windows:
            key = (sample.tenant_id, sample.campaign_id)
            if key not in labelled and len(labelled) < self._cap:
                labelled.add(key)
            if self._tenant is not None and sample.tenant_id != self._tenant:
                continue
            label = sample.campaign_id if key in labelled else OTHER
            if sample.window == CUMULATIVE and sample.end is not None:
                at = (sample.end - MINUTE).timestamp()
                newest[(sample.tenant_id, label)] = max(
                    at, newest.get((sample.tenant_id, label), at)
                )
            profile = self._metrics.profile_of(sample)
            if profile is None:
                continue
            for (rule, metric, window, kind), state in rule_states(sample, profile).items():
                group = (sample.tenant_id, label, profile.name, rule, metric, window, kind)
                held = merged.get(group)
                if held is None:
                    merged[group] = ({state.cap}, state.verdict, state.headroom)
                else:
                    held[0].add(state.cap)
                    merged[group] = (
                        held[0],
                        max(held[1], state.verdict),
                        min(held[2], state.headroom),
                    )
        for group, (cap_set, verdict, room) in merged.items():
            labels = list(group)
            if len(cap_set) == 1:
                caps.add_metric(labels, float(next(iter(cap_set))))
            verdicts.add_metric(labels, verdict)
            rooms.add_metric(labels, room)
        for (tenant, label), at in newest.items():
            last_cdr.add_metric([tenant, label], at)
        yield caps
        yield verdicts
        yield rooms
        yield last_cdr


class ApiMetrics:
    """Registers the api's collector on `registry`; `refresh` reads the store."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        campaign_cap: int,
        clock: Clock,
        newest_output_at: Callable[[], datetime | None] = lambda: None,
        default_profile: str = "it",
    ) -> None:
        self.registry = registry
        self.snapshot = MetricsSnapshot(windows=[], firing={})
        self.newest_output_at = newest_output_at
        self.default_profile = default_profile
        self._profiles: dict[tuple[str, str], Profile | None] = {}
        # The current day and period windows (`current_windows`) summed at the last
        # refresh, and the sums by window, kept while the campaign's cumulative counts stay
        # the same (a campaign without new data costs no query).
        self.current: list[WindowSample] = []
        self._sums: dict[
            tuple[str, str, str, datetime, datetime], tuple[object, dict[str, int]]
        ] = {}
        self._anchors: dict[tuple[str, str], tuple[object, PeriodAnchor]] = {}
        self._cap = campaign_cap
        self._clock = clock
        registry.register(_StoreCollector(self, campaign_cap, clock))

    def profile_of(self, sample: WindowSample) -> Profile | None:
        """The campaign's profile with its overrides, as the compliance view reads it (the
        configured one, else the detector's, else the default); None when it cannot be
        loaded (a profile file since removed): that campaign then has no rule series."""
        name = sample.rules_profile or self.default_profile
        key = (name, json.dumps(sample.overrides or {}, sort_keys=True))
        if key not in self._profiles:
            if len(self._profiles) > 10_000:
                self._profiles.clear()
            try:
                self._profiles[key] = load_profile(name, sample.overrides or None)
            except ProfileError:
                self._profiles[key] = None
        return self._profiles[key]

    async def refresh(self, store: AlertStore) -> None:
        snapshot = await store.metrics_snapshot()
        current: list[WindowSample] = []
        sums: dict[tuple[str, str, str, datetime, datetime], tuple[object, dict[str, int]]] = {}
        anchors: dict[tuple[str, str], tuple[object, PeriodAnchor]] = {}
        for sample in snapshot.windows:
            profile = self.profile_of(sample) if sample.window == CUMULATIVE else None
            if profile is None:
                continue
            fingerprint = (sample.end, tuple(sorted(sample.counts.items())))
            anchor = None
            if sample.start is not None and any(
                kind.sample == CURRENT_PERIOD for kind in _summed_kinds(profile)
            ):
                scope = (sample.tenant_id, sample.campaign_id)
                found = self._anchors.get(scope)
                if found is None or found[0] != fingerprint:
                    found = (
                        fingerprint,
                        await period_anchor(
                            store,
                            sample.campaign_id,
                            tenant_id=sample.tenant_id,
                            first_minute=minute_of(sample.start),
                        ),
                    )
                anchors[scope] = found
                anchor = found[1]
            for name, start, end in current_windows(sample, profile, anchor):
                key = (sample.tenant_id, sample.campaign_id, name, start, end)
                held = self._sums.get(key)
                if held is None or held[0] != fingerprint:
                    # Whole minutes; a period's edge minutes are split by their heads.
                    first, last = minute_of(start), minute_of(end)
                    counts = await store.sum_stats(
                        sample.campaign_id,
                        minute_start(first),
                        minute_start(last),
                        tenant_id=sample.tenant_id,
                    )
                    if counts is None:
                        continue
                    if name == CURRENT_PERIOD and anchor is not None:
                        counts = _period_edges(counts, anchor.head(first), anchor.head(last))
                    held = (fingerprint, counts)
                sums[key] = held
                current.append(
                    replace(
                        sample,
                        window=name,
                        start=start,
                        end=end,
                        counts=held[1],
                    )
                )
        self.snapshot, self.current, self._sums = snapshot, current, sums
        self._anchors = anchors

    def exposition(self, tenant: str | None) -> bytes:
        """The text exposition a scrape gets: everything on the registry for a token bound
        to no tenant; for a tenant-bound token only that tenant's campaign and alert series
        (process-wide series such as the ingest counters say nothing of one tenant and are
        left out)."""
        if tenant is None:
            return generate_latest(self.registry)
        scoped = CollectorRegistry(auto_describe=False)
        scoped.register(_StoreCollector(self, self._cap, self._clock, tenant=tenant))
        return generate_latest(scoped)
