"""Core data: a call as the rules see it, its classification, and bucket counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

AGENT_GUARANTEED_MODES = frozenset({"progressive", "preview", "manual"})
# A call's one outcome name (`CallOutcome.name`), most specific first.
CALL_OUTCOMES = ("silent", "abandoned", "answered", "amd_machine", "unanswered")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call attempt, normalised by ingest. Every datetime is aware and in UTC.

    `callee_zones` are the IANA zones the callee's number maps to (an explicit
    `callee_tz` from the dialer is the only entry when given); empty when unknown, in
    which case the profile's home zone applies.
    """

    call_id: str
    campaign_id: str
    originated_at: datetime
    ended_at: datetime
    callee_key: str = ""
    tenant_id: str | None = None
    dial_mode: str = "predictive"
    callee_country: str | None = None
    callee_zones: tuple[str, ...] = ()
    callee_region: str | None = None
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    greeting_ended_at: datetime | None = None
    agent_connected_at: datetime | None = None
    message_started_at: datetime | None = None
    amd_result: str = "none"
    message_type: str | None = None
    hangup_side: str | None = None
    refusal: bool | None = None

    @property
    def agent_guaranteed(self) -> bool:
        """SPEC: progressive, preview and manual dial modes guarantee an agent."""
        return self.dial_mode in AGENT_GUARANTEED_MODES


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What one call counts as (SPEC "Classification"). `violations` holds the rule ids of
    the profile's per-call rules the call breaks; `unverifiable` the ids of rules the call
    could not be judged by because the dialer did not report what they need (e.g. the
    message type for the Italian comfort-noise rule): neither compliant nor a violation."""

    answered: bool
    answered_by_person: bool
    amd_machine: bool
    silent: bool
    abandoned: bool
    out_of_hours: bool
    short_ring: bool
    violations: tuple[str, ...] = ()
    unverifiable: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The call's one outcome (`CALL_OUTCOMES`), most specific first: `silent` (no
        agent ever), `abandoned` (agent too late), `answered` (by a person, agent in
        time), `amd_machine`, `unanswered`."""
        if self.silent:
            return "silent"
        if self.abandoned:
            return "abandoned"
        if self.answered_by_person:
            return "answered"
        return "amd_machine" if self.amd_machine else "unanswered"

    @property
    def traced(self) -> bool:
        """Whether the call is kept as an individual record (IT-SC-1, Garante 2014: every
        silent call is traced): silent, abandoned, or breaking a per-call rule."""
        return self.silent or self.abandoned or bool(self.violations)


class BucketCounts(NamedTuple):
    """The eight counts of SPEC's stats, for one bucket or any sum of buckets.

    A NamedTuple, not a frozen dataclass: several are made per call (the bucket, its head,
    the rolling and day sums, the period), and a frozen dataclass's `__init__` (one
    `object.__setattr__` per field) cost three times a tuple's. Immutable all the same."""

    attempts: int = 0
    answered: int = 0
    answered_by_person: int = 0
    amd_machine: int = 0
    silent: int = 0
    abandoned: int = 0
    out_of_hours: int = 0
    short_ring: int = 0

    def add(self, outcome: CallOutcome) -> BucketCounts:
        """These counts plus one call."""
        return _make(
            BucketCounts,
            (
                self.attempts + 1,
                self.answered + outcome.answered,
                self.answered_by_person + outcome.answered_by_person,
                self.amd_machine + outcome.amd_machine,
                self.silent + outcome.silent,
                self.abandoned + outcome.abandoned,
                self.out_of_hours + outcome.out_of_hours,
                self.short_ring + outcome.short_ring,
            ),
        )

    def merge(self, other: BucketCounts) -> BucketCounts:
        """Field-wise sum: buckets are summed on read to form any window. (Spelled out: it
        runs several times per call, and a zip over two lists cost three times as much.)"""
        return _make(
            BucketCounts,
            (
                self.attempts + other.attempts,
                self.answered + other.answered,
                self.answered_by_person + other.answered_by_person,
                self.amd_machine + other.amd_machine,
                self.silent + other.silent,
                self.abandoned + other.abandoned,
                self.out_of_hours + other.out_of_hours,
                self.short_ring + other.short_ring,
            ),
        )

    def minus(self, other: BucketCounts) -> BucketCounts:
        """Field-wise difference (a window's sum less the buckets that left it). Spelled
        out like `merge`: the generator over a zip was 5 % of the detector's time at 2,000
        campaigns (cProfile, 2026-12-04)."""
        return _make(
            BucketCounts,
            (
                self.attempts - other.attempts,
                self.answered - other.answered,
                self.answered_by_person - other.answered_by_person,
                self.amd_machine - other.amd_machine,
                self.silent - other.silent,
                self.abandoned - other.abandoned,
                self.out_of_hours - other.out_of_hours,
                self.short_ring - other.short_ring,
            ),
        )

    def to_list(self) -> list[int]:
        return list(self)

    @classmethod
    def from_list(cls, values: Sequence[int]) -> BucketCounts:
        return cls(*values)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self._fields, self, strict=True))


_make = tuple.__new__

EMPTY = BucketCounts()
