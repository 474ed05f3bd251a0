"""The api's Prometheus metrics, all on one injected CollectorRegistry (STYLE habit 8).

Figures come from the store at scrape time (`ApiMetrics.refresh`), through one custom
collector, so every value is exactly what the store holds:

- `cdrwatch_campaign_rate{tenant,campaign,profile,metric,window}` (gauge): silent,
  abandoned and out_of_hours rates of each live window the detector publishes (`window` is the stats
  header: cumulative, 15m, 1h, 24h, ...); absent while the rate's denominator is 0.
- `cdrwatch_campaign_calls_total{tenant,campaign,outcome}` (counter): the campaign's
  totals from its `cumulative` window; they only grow.
- `cdrwatch_alerts_firing{tenant,rule,severity}` (gauge): alerts in state firing.
- `cdrwatch_detector_lag_seconds` (gauge): seconds between now and the broker timestamp of
  the newest alerts/stats record this api consumed, i.e. how stale the figures served are;
  it grows while the detector is stalled, behind, or idle. Absent until a record arrived.

/metrics needs a viewer token (routes/health.py); a tenant-bound token gets its tenant's
series only (`ApiMetrics.exposition`). Ids are validated at ingest (printable, no `/`), so
no control character reaches a label.

Campaign labels are capped at `campaign_cap` (counted over (tenant, campaign)): the
campaigns seen first keep their label (so a series never changes label), the rest are
folded into `campaign="_other"` of their tenant, whose rates are computed from the summed
counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.api.clock import Clock
from services.api.store import AlertStore, MetricsSnapshot

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
        yield firing
        newest = self._metrics.newest_output_at()
        if newest is not None:
            yield GaugeMetricFamily(
                "cdrwatch_detector_lag_seconds",
                "Seconds since the newest detector output (alerts or stats record) the api "
                "consumed was produced.",
                value=max(0.0, (self._clock() - newest).total_seconds()),
            )


class ApiMetrics:
    """Registers the api's collector on `registry`; `refresh` reads the store."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        campaign_cap: int,
        clock: Clock,
        newest_output_at: Callable[[], datetime | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.snapshot = MetricsSnapshot(windows=[], firing={})
        self.newest_output_at = newest_output_at
        self._cap = campaign_cap
        self._clock = clock
        registry.register(_StoreCollector(self, campaign_cap, clock))

    async def refresh(self, store: AlertStore) -> None:
        self.snapshot = await store.metrics_snapshot()

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
