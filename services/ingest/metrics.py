"""Every metric of the ingest service, defined against an injected registry (SPEC "Metrics")."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

Source = Literal["http", "kafka"]
RejectReason = Literal["invalid", "too_far_future", "tenant_mismatch", "publish_failed"]
DeadLetterReason = Literal["invalid", "unreadable"]
SkipReason = Literal["internal_leg", "internal_extension"]
SKIP_REASONS: tuple[SkipReason, ...] = ("internal_leg", "internal_extension")

SOURCES: tuple[Source, ...] = ("http", "kafka")
REJECT_REASONS: tuple[RejectReason, ...] = (
    "invalid",
    "too_far_future",
    "tenant_mismatch",
    "publish_failed",
)
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = ("invalid", "unreadable")


class IngestMetrics:
    """Counters and the request histogram. Label values come only from the closed sets above,
    and every series is created up front so that a scrape shows zeros, not gaps."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "cdrwatch_cdrs_received",
            "CDRs received, before validation, by source.",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "cdrwatch_cdrs_rejected",
            "CDRs rejected by ingest, by reason.",
            ["reason"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "cdrwatch_ingest_request_seconds",
            "Time to answer one POST /v1/cdrs, body read and broker acknowledgement included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.dead_letters = Counter(
            "cdrwatch_ingest_dead_letters",
            "Messages the raw-topic validator wrote to cdrwatch.cdrs.dlq.v1, by reason.",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "cdrwatch_cdrs_skipped",
            "Dialer records that are no callee call (internal legs, extensions), by reason.",
            ["reason"],
            registry=registry,
        )
        for skip_reason in SKIP_REASONS:
            self.skipped.labels(reason=skip_reason)
        for source in SOURCES:
            self.received.labels(source=source)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        for dead_reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=dead_reason)

    def count_received(self, source: Source, count: int) -> None:
        if count:
            self.received.labels(source=source).inc(count)

    def count_rejected(self, reason: RejectReason, count: int = 1) -> None:
        if count:
            self.rejected.labels(reason=reason).inc(count)

    def count_skipped(self, reason: str, count: int = 1) -> None:
        if count and reason in SKIP_REASONS:
            self.skipped.labels(reason=reason).inc(count)

    def count_dead_letters(self, reason: DeadLetterReason, count: int = 1) -> None:
        if count:
            self.dead_letters.labels(reason=reason).inc(count)
