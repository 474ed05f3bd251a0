"""Call traces on `cdrwatch.calls.v1` (schemas.call_v1): the one mapping from the core's
traced calls and lockout violations to the wire. Hand-built JSON on the hot path; tests
hold it to the model (tests/service/test_detector_calls.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from schemas.call_v1 import MAX_CALLS_PER_MESSAGE
from schemas.instants import format_instant
from services.detector.core.lockouts import LockoutViolation
from services.detector.core.model import CallOutcome, CallRecord


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def traced_call(call: CallRecord, outcome: CallOutcome) -> dict[str, Any]:
    """A CallV1 body of a call the main stage classified."""
    return {
        "call_id": call.call_id,
        "originated_at": format_instant(call.originated_at),
        "answered_at": _instant(call.answered_at),
        "agent_connected_at": _instant(call.agent_connected_at),
        "ended_at": format_instant(call.ended_at),
        "outcome": outcome.name,
        "dial_mode": call.dial_mode,
        "callee_key": call.callee_key or None,
        "rule_hits": list(outcome.violations),
    }


def lockout_hit(violation: LockoutViolation) -> dict[str, Any]:
    """A CallV1 body of a lockout or frequency-cap hit: only what the lockout stage knows."""
    return {
        "call_id": violation.call_id,
        "originated_at": format_instant(violation.originated_at),
        "rule_hits": [violation.rule_id],
    }


def call_batches(
    traced: Iterable[tuple[str, str, dict[str, Any]]],
) -> Iterator[tuple[str, str, bytes]]:
    """(tenant, campaign, CallBatchV1 JSON) for `traced` (tenant, campaign, CallV1 body),
    one message per campaign and at most MAX_CALLS_PER_MESSAGE calls each."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for tenant, campaign, body in traced:
        grouped.setdefault((tenant, campaign), []).append(body)
    for (tenant, campaign), calls in grouped.items():
        for start in range(0, len(calls), MAX_CALLS_PER_MESSAGE):
            chunk = calls[start : start + MAX_CALLS_PER_MESSAGE]
            body = {"campaign_id": campaign, "tenant_id": tenant, "calls": chunk}
            yield tenant, campaign, orjson.dumps(body)
