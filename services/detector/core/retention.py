"""How long the detector keeps per-call and per-minute state, judged in event time.

Expiry is never judged on the wall clock (SPEC "Precise semantics": a backfill of last
year's traffic works): a record expires relative to its campaign's newest `originated_at`.
- A seen-entry (dedup) is kept `dedup_retention` behind the newest call (8 days by
  default: longer than the 7-day lateness horizon, so any copy still accepted as not too
  late is still recognised as a duplicate).
- A minute bucket is kept the lateness horizon plus two days behind the newest call: a
  late call may still land in it, and day and 24-hour windows are summed from it. The api
  keeps every minute for the retention period; the detector needs only this working set.
"""

from __future__ import annotations

from datetime import timedelta

from services.detector.core.windows import MINUTE

BUCKET_MARGIN = timedelta(days=2)


def seen_expired(seen_minute: int, newest_minute: int, dedup_retention: timedelta) -> bool:
    """True when a dedup entry is older than the retention behind its campaign's newest."""
    return seen_minute < newest_minute - dedup_retention // MINUTE


def bucket_expired(bucket_minute: int, newest_minute: int, lateness: timedelta) -> bool:
    """True when no late call can reach the bucket and no evaluated window needs it."""
    return bucket_minute < newest_minute - (lateness + BUCKET_MARGIN) // MINUTE
