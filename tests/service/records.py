"""Dialer records shared by the ingest tests (HTTP and the raw Kafka topic)."""

from __future__ import annotations

from typing import Any

RAW_NUMBER = "+393471234567"
RAW_DIGITS = RAW_NUMBER.removeprefix("+")


def make_cdr(call_id: str | None = "c-1", **changes: Any) -> dict[str, Any]:
    """A valid answered, connected CDR v1; `changes` override fields (None removes one)."""
    record: dict[str, Any] = {
        "call_id": call_id,
        "campaign_id": "energia-primavera",
        "callee_number": RAW_NUMBER,
        "originated_at": "2026-03-02T10:15:00+01:00",
        "answered_at": "2026-03-02T10:15:09+01:00",
        "agent_connected_at": "2026-03-02T10:15:10+01:00",
        "ended_at": "2026-03-02T10:17:00+01:00",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}
