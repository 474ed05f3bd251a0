"""Every metric the detector exposes, against an injected registry (STYLE habit 8)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.detector.core.engine import BatchOutput


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.processed = Counter(
            "cdrwatch_detector_cdrs_processed_total",
            "CDRs classified and counted by the detector.",
            registry=registry,
        )
        self.callee_calls = Counter(
            "cdrwatch_detector_callee_calls_total",
            "Calls applied to the callee histories by the per-callee stage (lockouts, "
            "frequency caps); repeats after a restart included.",
            registry=registry,
        )
        self.callee_calls_forwarded = Counter(
            "cdrwatch_detector_callee_calls_forwarded_total",
            "Calls the CDR stage sent to the per-callee stage (cdrwatch_detector_callee_calls"
            "_total counts them applied there); repeats after a restart included.",
            registry=registry,
        )
        self.duplicates = Counter(
            "cdrwatch_cdrs_duplicate_total",
            "CDRs whose call_id was already accepted; counted once, ignored after.",
            registry=registry,
        )
        self.rejected = Counter(
            "cdrwatch_cdrs_rejected_total",
            "CDRs rejected by the detector, by reason.",
            ["reason"],
            registry=registry,
        )
        self.alerts_published = Counter(
            "cdrwatch_detector_alert_updates_total",
            "Alert transitions and updates published.",
            registry=registry,
        )
        self.alerts_coalesced = Counter(
            "cdrwatch_detector_alert_updates_coalesced_total",
            "Alert updates with new figures only that a newer update of the same alert "
            "replaced before they were sent (at most one such update per alert per "
            "alert_update_interval_seconds).",
            registry=registry,
        )
        self.expired = Counter(
            "cdrwatch_detector_state_expired_total",
            "Dedup entries and minute buckets dropped from the detector's state (event time).",
            registry=registry,
        )
        self.lag = Gauge(
            "cdrwatch_detector_lag_seconds",
            "Wall-clock seconds between ingest accepting the newest CDR of the last batch and "
            "the detector processing it.",
            registry=registry,
        )
        self.stage_conflict = Gauge(
            "cdrwatch_detector_stage_conflict",
            "1 while workers of both forms of the per-callee stage (`--stage all` and "
            "`--stage callees`) are live, seen by this worker's heartbeat check "
            "(services/detector/stage_guard.py), else 0.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "cdrwatch_detector_batch_seconds",
            "Time to process one batch of CDRs.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        for reason in ("too_late", "unreadable", "unprocessable"):
            self.rejected.labels(reason=reason)

    def observe_batch(self, out: BatchOutput, seconds: float) -> None:
        self.processed.inc(out.processed)
        self.duplicates.inc(out.duplicates)
        if out.too_late:
            self.rejected.labels(reason="too_late").inc(out.too_late)
        self.batch_seconds.observe(seconds)
