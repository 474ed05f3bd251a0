""" "Now" as an injected dependency (STYLE habit 2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, timezone-aware in UTC."""
    return datetime.now(UTC)
