"""Stats v1 (SPEC "HTTP API", "Shapes"): counts and rates for calls with
`originated_at` in [from, to). The same model is published on `cdrwatch.stats.v1` and
answered by `GET /v1/campaigns/{id}/stats`.

On the topic, a message header `cdrwatch-window` says what the range is: `minute` (one
event-time bucket, absolute counts, last write wins), `minute-head` (the calls of a minute
bucket before the US 30-day period boundary inside it: `from` is the minute's start, `to`
the boundary; the detector sends one with every minute bucket holding a boundary, the
first call's minute included, so `to` there is the campaign's exact first call), or a
rolling/regulatory window name (`cumulative`, `15m`, `1h`, `24h`) for live gauges.
Headers `cdrwatch-tenant` and `cdrwatch-profile` carry the campaign's scope. They are
headers, not fields, so that the model stays exactly the flat object SPEC describes. The
detector sends these records, headers included, inside record batch envelopes
(schemas.record_batch_v1), one Kafka record per partition and processed batch.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.cdr_v1 import Instant

Count = Annotated[int, Field(ge=0)]
Rate = Annotated[float | None, Field(ge=0.0, le=1.0)]

COUNT_FIELDS = (
    "attempts",
    "answered",
    "answered_by_person",
    "amd_machine",
    "silent",
    "abandoned",
    "out_of_hours",
    "short_ring",
)


class StatsV1(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    campaign_id: Annotated[str, Field(min_length=1, max_length=200)]
    # The campaign's tenant (CONTRACT decision 3); null only in messages of older detectors.
    tenant_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    from_: Annotated[Instant, Field(alias="from")]
    to: Instant
    attempts: Count = 0
    answered: Count = 0
    answered_by_person: Count = 0
    amd_machine: Count = 0
    silent: Count = 0
    abandoned: Count = 0
    out_of_hours: Count = 0
    short_ring: Count = 0
    silent_rate: Rate = None
    abandoned_rate: Rate = None
    out_of_hours_rate: Rate = None


def rate(numerator: int, denominator: int) -> float | None:
    """Display rate; `None` when the denominator is 0 (SPEC "Rates and thresholds")."""
    return None if denominator == 0 else numerator / denominator


def stats_from_counts(
    campaign_id: str,
    start: object,
    end: object,
    counts: dict[str, int],
    *,
    tenant_id: str | None = None,
) -> StatsV1:
    """Build a StatsV1 with its three rates from the eight counts."""
    return StatsV1.model_validate(
        {
            "campaign_id": campaign_id,
            "tenant_id": tenant_id,
            "from": start,
            "to": end,
            **{name: counts.get(name, 0) for name in COUNT_FIELDS},
            "silent_rate": rate(counts.get("silent", 0), counts.get("answered_by_person", 0)),
            "abandoned_rate": rate(counts.get("abandoned", 0), counts.get("answered_by_person", 0)),
            "out_of_hours_rate": rate(counts.get("out_of_hours", 0), counts.get("attempts", 0)),
        }
    )
