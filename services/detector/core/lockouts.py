"""Per-callee re-call lockouts and frequency caps (issue 3 item 5); pure.

State is one history per (tenant, pseudonymised callee): the caller of a callee is the
tenant (call centre), so every campaign of a tenant shares it. The caller guarantees that
only calls of one key meet in a history. A history is a tuple of `CalleeCall`s sorted by
(`originated_at`, `call_id`), at most one per `call_id`.

Rules (profile data, `LockoutRules.of(profile)`; each rule's `reference` names its source):

- **Lockout, rolling hours** (`LockoutRule.hours = H`; Ofcom UK-5: 72 h after an abandoned
  call; Garante 20 Feb 2014 n. 83, IT-SC-5: "per 5 giorni" = 120 h after a silent call): a
  call C breaks the rule when some other call T of the history has the rule's trigger and
  `T.t < C.t < T.t + H h` (t = `originated_at`). Exactly 72 h (120 h) after is free; a
  call at the trigger's very instant is not "after" it; a call is never its own trigger.
- **Lockout, calendar days** (`calendar_days = N`): locked while `T.t < C.t < end`, `end`
  being the first instant after the Nth calendar day following T's day in the profile's
  home zone (local midnight; N = 0: the end of T's own day). Ofcom 2010 (UK-6): the same
  London calendar day after AMD = machine; Décret 2022-1313 (FR): 60 calendar days after
  an explicit refusal. Days are local dates, never multiples of 24 h: a DST change day is
  23 or 25 h long.
- **Agent-guaranteed exemption**: with `agent_guaranteed_exempt`, a later call in an
  agent-guaranteed dial mode (progressive, preview, manual) breaks no lockout (UK-5,
  UK-6). The Italian 5-day lockout (IT-SC-5, "non può essere ricontattato per 5 giorni")
  and the French refusal rule ("no call or call attempt") have no exemption.
- **Lockout after a lockout** (`LockoutRule.after = A`, same trigger; IT-SC-5 "al contatto
  successivo, deve essere garantita la presenza di un operatore"): the rule covers the
  calls C with `lockout_end(A, T) <= C.t < lockout_end(rule, T)`, i.e. from the first
  instant A leaves free on; with the agent exemption, only calls without an agent
  guaranteed (predictive, agentless) break it. "The next call after the lockout" is read
  on the set, as every call of that span: the first call of a span can stop being first
  when an earlier CDR arrives late, and a reported violation is never withdrawn, so a
  rule naming only the first call could not give the same result for every arrival
  order. In `it` the span is the 120 h after the 120-h lockout (from 5 to 10 days after).
- **Frequency cap** (`FrequencyCap(max_calls, window_days)`; Décret 2022-1313, regulation.md
  §5.1: "≤ 4 solicitations per 30 calendar days by the same professional"): a call C breaks
  the cap when at least `max_calls` OTHER calls of the history originated at or before C
  (`t <= C.t`) and on or after the local midnight that starts the (`window_days` − 1)-th
  calendar day before C's day, in the home zone. In words: C is the 5th or a later
  solicitation within the 30 calendar days ending on C's day. So exactly the calls that
  make some 30-calendar-day span hold more than 4 calls are flagged, from the 5th on (the
  latest call of any 5 within 30 calendar days always is); two calls at the very same
  instant both count as earlier than each other (safe side). Every attempt counts, answered
  or not, agent-guaranteed or not (regulation.md: not verified whether unanswered attempts
  count; count them, safe side). A rolling window flags at least whatever a period anchored
  at a first solicitation would.

Order independence: the violations of a set of calls are a function of the set (above), and
adding a call never removes one. `record_call` returns exactly the (rule, call) pairs the
new call adds — violations(history + new) − violations(history) — so over any arrival
order of the same calls each pair of violations(all calls) is reported exactly once, as
long as `prune` has not dropped a call still needed (then a pair may come again: the caller
dedups by (rule_id, call_id)). When a trigger arrives after calls it locks (later in event
time, earlier in arrival), their violations are reported on its arrival, with it as
`trigger_call_id`. A call whose `call_id` is already in the history is a duplicate: no
violations, history unchanged (the first copy wins, SPEC "Duplicates").

Which trigger a violation names (`trigger_call_id`) may depend on arrival order: the latest
locking trigger before the call in the history at the time; None for frequency caps.

Bounds (`prune`): a call more than `lateness` (7 days, SPEC) older than the newest is
refused upstream, so a call older than `newest − (longest rule + lateness + 1 day)` can
no longer trigger, count for or be judged against any call still to come (a rule's length:
`hours`, N + 1 days for `calendar_days = N`, `window_days` for a cap; the day of margin
covers DST hours). The history is also capped to the `max_calls` (64) most recent calls: a
callee called more often than that within the horizon is far past any frequency cap, and
at 10 million callees each history must stay small; the price is that a very late call to
such a callee is judged without the calls dropped by the cap.

The rules are the ones passed with each call (its campaign's profile); a tenant whose
campaigns use different profiles gets each call judged by its own campaign's rules.
"""

from __future__ import annotations

import functools
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from .calendar import local_time, validate_zone
from .model import CallOutcome, CallRecord
from .profiles import LOCKOUT_TRIGGERS, FrequencyCap, LockoutRule, Profile

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
DEFAULT_LATENESS = timedelta(days=7)
PRUNE_MARGIN = timedelta(days=1)
MAX_CALLS_PER_CALLEE = 64

_LETTERS = {"silent": "s", "abandoned": "a", "amd_machine": "m", "refusal": "r"}
_TRIGGERS_BY_LETTER = {letter: trigger for trigger, letter in _LETTERS.items()}
assert set(_LETTERS) == set(LOCKOUT_TRIGGERS)
# The trigger set of (silent, abandoned, amd_machine, refusal), made once: `callee_call`
# runs once per CDR, and building a set per call was a tenth of the per-callee cost.
_TRIGGER_SETS = {
    flags: frozenset(
        name
        for name, present in zip(
            ("silent", "abandoned", "amd_machine", "refusal"), flags, strict=True
        )
        if present
    )
    for flags in itertools.product((False, True), repeat=4)
}


@functools.lru_cache(maxsize=64)
def _letters(triggers: frozenset[str]) -> str:
    """A history row's trigger letters, in `LOCKOUT_TRIGGERS` order (16 sets at most)."""
    return "".join(_LETTERS[t] for t in LOCKOUT_TRIGGERS if t in triggers)


@functools.lru_cache(maxsize=256)
def _triggers(letters: str) -> frozenset[str]:
    """The trigger set of a row's letters (checked by the caller)."""
    return frozenset(_TRIGGERS_BY_LETTER[letter] for letter in letters)


@dataclass(frozen=True, slots=True)
class CalleeCall:
    """What a callee's history keeps of one call (kept small: 10 million callees).

    `originated_at` is aware UTC; `triggers` are the lockout triggers (`LOCKOUT_TRIGGERS`:
    "silent", "abandoned", "amd_machine", "refusal") the call is."""

    call_id: str
    campaign_id: str
    originated_at: datetime
    agent_guaranteed: bool
    triggers: frozenset[str]


@dataclass(frozen=True, slots=True)
class LockoutViolation:
    """Call `call_id` broke rule `rule_id` (a LockoutRule or FrequencyCap id).

    `campaign_id` and `originated_at` are the breaking call's; `trigger_call_id` is the
    earlier call that created the lockout (None for a frequency cap)."""

    rule_id: str
    call_id: str
    campaign_id: str
    originated_at: datetime
    trigger_call_id: str | None


@dataclass(frozen=True, slots=True)
class LockoutRules:
    """The per-callee rules of a profile and the zone its calendar days are counted in."""

    lockouts: tuple[LockoutRule, ...]
    frequency_caps: tuple[FrequencyCap, ...]
    zone: str

    def __post_init__(self) -> None:
        validate_zone(self.zone)

    @classmethod
    def of(cls, profile: Profile) -> LockoutRules:
        return cls(profile.lockouts, profile.frequency_caps, profile.home_zone)

    def horizon(self, lateness: timedelta = DEFAULT_LATENESS) -> timedelta | None:
        """How far behind the newest call a history must reach (module docstring, "Bounds");
        None when there is no rule at all (nothing to keep)."""
        return _horizon(self.lockouts, self.frequency_caps, lateness)


@functools.lru_cache(maxsize=256)
def _horizon(
    rules: tuple[LockoutRule, ...], caps: tuple[FrequencyCap, ...], lateness: timedelta
) -> timedelta | None:
    """`LockoutRules.horizon`, computed once per set of rules (it is asked once per call)."""
    lengths = [_lock_length(rule) for rule in rules]
    lengths += [timedelta(days=cap.window_days) for cap in caps]
    if not lengths:
        return None
    return max(lengths) + lateness + PRUNE_MARGIN


def callee_call(call: CallRecord, outcome: CallOutcome) -> CalleeCall:
    """The history entry of `call` classified as `outcome` (SPEC "Classification").

    Triggers: `silent`, `abandoned` (every silent call is also abandoned) and `amd_machine`
    from the outcome; `refusal` when the dialer reported `refusal = true` (absent or false:
    no refusal). `originated_at` must be aware; it is kept in UTC."""
    return CalleeCall(
        call_id=call.call_id,
        campaign_id=call.campaign_id,
        originated_at=_utc(call.originated_at),
        agent_guaranteed=call.agent_guaranteed,
        triggers=_TRIGGER_SETS[
            (outcome.silent, outcome.abandoned, outcome.amd_machine, call.refusal is True)
        ],
    )


def lockout_end(rule: LockoutRule, triggered_at: datetime, zone: str) -> datetime:
    """The first free instant (UTC) after a `rule` trigger at `triggered_at` (aware).

    `hours`: `triggered_at + hours` (72 h after: free). `calendar_days = N`: local midnight
    (in `zone`) starting the (N + 1)-th day after the trigger's local date: Monday 10:00
    with N = 5 gives Sunday 00:00, i.e. locked through Saturday 24:00. A midnight skipped by
    a DST gap resolves to the instant the day starts (zoneinfo's fold = 0)."""
    if rule.hours is not None:
        return _utc(triggered_at) + timedelta(hours=rule.hours)
    assert rule.calendar_days is not None  # profiles.py guarantees exactly one is set
    return _local_midnight(triggered_at, zone, rule.calendar_days + 1)


def frequency_window_start(cap: FrequencyCap, at: datetime, zone: str) -> datetime:
    """Start (UTC) of the `cap.window_days` calendar days in `zone` ending on `at`'s day."""
    return _local_midnight(at, zone, 1 - cap.window_days)


def record_call(
    history: tuple[CalleeCall, ...], new: CalleeCall, rules: LockoutRules
) -> tuple[tuple[CalleeCall, ...], list[LockoutViolation]]:
    """Add `new` to a callee's `history`; return the new history and the violations `new`
    adds: those of `new` itself and those of history calls it locks out or pushes over a
    frequency cap (module docstring). Pairs already violated before `new` are not repeated.
    A duplicate `call_id` returns `history` unchanged and no violations.

    Violations are sorted by (originated_at, call_id, rule_id)."""
    if any(call.call_id == new.call_id for call in history):
        return history, []
    new = _normalised(new)
    times = [call.originated_at for call in history]
    found: list[LockoutViolation] = []
    for rule in rules.lockouts:
        found.extend(_lockout_violations(history, times, new, rule, rules.zone))
    for cap in rules.frequency_caps:
        found.extend(_frequency_violations(history, times, new, cap, rules.zone))
    key = _sort_key(new)
    position = bisect_left([_sort_key(call) for call in history], key)
    updated = (*history[:position], new, *history[position:])
    found.sort(key=lambda v: (v.originated_at, v.call_id, v.rule_id))
    return updated, found


def prune(
    history: tuple[CalleeCall, ...],
    newest: datetime,
    rules: LockoutRules,
    *,
    lateness: timedelta = DEFAULT_LATENESS,
    max_calls: int = MAX_CALLS_PER_CALLEE,
) -> tuple[CalleeCall, ...]:
    """The calls of `history` (sorted) any rule may still use: those originated at or after
    `newest − rules.horizon(lateness)`, of which at most the `max_calls` most recent.
    `newest` is the newest `originated_at` accepted for the key (calls older than
    `newest − lateness` are refused upstream). No rule at all: nothing is kept."""
    horizon = rules.horizon(lateness)
    if horizon is None:
        return ()
    cutoff = _utc(newest) - horizon
    first = bisect_left([call.originated_at for call in history], cutoff)
    first = max(first, len(history) - max_calls)
    return history[first:]


def to_json(history: Sequence[CalleeCall]) -> list[list[str | int]]:
    """Compact rows `[call_id, campaign_id, epoch_us, agent_guaranteed 0/1, letters]`,
    letters one per trigger: s silent, a abandoned, m amd_machine, r refusal (e.g. "sa")."""
    return [
        [
            call.call_id,
            call.campaign_id,
            (_utc(call.originated_at) - EPOCH) // MICROSECOND,
            int(call.agent_guaranteed),
            _letters(call.triggers),
        ]
        for call in history
    ]


def from_json(raw: object) -> tuple[CalleeCall, ...]:
    """The history `to_json` wrote (rows in any order; returned sorted). ValueError names
    the first malformed row."""
    if not isinstance(raw, list):
        raise ValueError(f"callee history must be a list of rows, got {type(raw).__name__}")
    calls = [_from_row(index, row) for index, row in enumerate(raw)]
    calls.sort(key=_sort_key)
    return tuple(calls)


# --- internals ----------------------------------------------------------------------------


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is UTC:
        return instant
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant {instant.isoformat()} has no UTC offset")
    return instant.astimezone(UTC)


def _normalised(call: CalleeCall) -> CalleeCall:
    unknown = call.triggers - _LETTERS.keys()
    if unknown:
        raise ValueError(f"call {call.call_id!r}: unknown lockout triggers {sorted(unknown)}")
    if call.originated_at.tzinfo is UTC:
        return call
    return CalleeCall(
        call.call_id,
        call.campaign_id,
        _utc(call.originated_at),
        call.agent_guaranteed,
        call.triggers,
    )


def _sort_key(call: CalleeCall) -> tuple[datetime, str]:
    return call.originated_at, call.call_id


def _local_midnight(instant: datetime, zone: str, day_offset: int) -> datetime:
    local = local_time(instant, zone)
    day = local.date() + timedelta(days=day_offset)
    return datetime.combine(day, time(0), tzinfo=local.tzinfo).astimezone(UTC)


@functools.lru_cache(maxsize=1024)
def _lock_length(rule: LockoutRule) -> timedelta:
    """The nominal length of a lockout: `hours`, or N + 1 days for `calendar_days = N` (a
    DST day makes the real span up to an hour longer; `PRUNE_MARGIN` covers it)."""
    if rule.hours is not None:
        return timedelta(hours=rule.hours)
    assert rule.calendar_days is not None
    return timedelta(days=rule.calendar_days + 1)


@functools.lru_cache(maxsize=1024)
def _search_bound(rule: LockoutRule) -> timedelta:
    """A safe upper bound of `lockout_end − trigger`, whatever the zone's offset changes."""
    return _lock_length(rule) + (timedelta(0) if rule.hours is not None else timedelta(days=1))


def _locks(rule: LockoutRule, trigger: CalleeCall, call: CalleeCall, zone: str) -> bool:
    """Whether `trigger` locks `call` out under `rule`."""
    if trigger.call_id == call.call_id or rule.trigger not in trigger.triggers:
        return False
    if rule.agent_guaranteed_exempt and call.agent_guaranteed:
        return False
    if call.originated_at >= lockout_end(rule, trigger.originated_at, zone):
        return False
    if rule.after is not None:
        return call.originated_at >= lockout_end(rule.after, trigger.originated_at, zone)
    return trigger.originated_at < call.originated_at


def _latest_trigger(
    history: tuple[CalleeCall, ...],
    times: list[datetime],
    call: CalleeCall,
    rule: LockoutRule,
    zone: str,
) -> CalleeCall | None:
    """The latest call of `history` that locks `call` out under `rule`, if any."""
    if rule.agent_guaranteed_exempt and call.agent_guaranteed:
        return None
    earliest = call.originated_at - _search_bound(rule)
    for index in range(bisect_left(times, call.originated_at) - 1, -1, -1):
        candidate = history[index]
        if candidate.originated_at <= earliest:
            break
        if _locks(rule, candidate, call, zone):
            return candidate
    return None


def _lockout_violations(
    history: tuple[CalleeCall, ...],
    times: list[datetime],
    new: CalleeCall,
    rule: LockoutRule,
    zone: str,
) -> list[LockoutViolation]:
    found: list[LockoutViolation] = []
    trigger = _latest_trigger(history, times, new, rule, zone)
    if trigger is not None:
        found.append(_violation(rule.id, new, trigger.call_id))
    if rule.trigger in new.triggers:
        end = lockout_end(rule, new.originated_at, zone)
        for index in range(bisect_right(times, new.originated_at), len(history)):
            later = history[index]
            if later.originated_at >= end:
                break
            if _locks(rule, new, later, zone) and (
                _latest_trigger(history, times, later, rule, zone) is None
            ):
                found.append(_violation(rule.id, later, new.call_id))
    return found


def _frequency_violations(
    history: tuple[CalleeCall, ...],
    times: list[datetime],
    new: CalleeCall,
    cap: FrequencyCap,
    zone: str,
) -> list[LockoutViolation]:
    found: list[LockoutViolation] = []
    start = frequency_window_start(cap, new.originated_at, zone)
    before = bisect_right(times, new.originated_at) - bisect_left(times, start)
    if before >= cap.max_calls:
        found.append(_violation(cap.id, new, None))
    # Later (or simultaneous) calls whose window holds `new` gain one earlier call; those
    # that had exactly max_calls − 1 now break the cap.
    for index in range(bisect_left(times, new.originated_at), len(history)):
        later = history[index]
        later_start = frequency_window_start(cap, later.originated_at, zone)
        if later_start > new.originated_at:
            break  # window starts only move forward with later calls
        others = bisect_right(times, later.originated_at) - bisect_left(times, later_start) - 1
        if others == cap.max_calls - 1:
            found.append(_violation(cap.id, later, None))
    return found


def _violation(rule_id: str, call: CalleeCall, trigger_call_id: str | None) -> LockoutViolation:
    return LockoutViolation(
        rule_id=rule_id,
        call_id=call.call_id,
        campaign_id=call.campaign_id,
        originated_at=call.originated_at,
        trigger_call_id=trigger_call_id,
    )


def _from_row(index: int, row: object) -> CalleeCall:
    if not isinstance(row, list | tuple) or len(row) != 5:
        raise ValueError(_row_problem(index, row))
    call_id, campaign_id, epoch_us, agent, letters = row
    if (
        not isinstance(call_id, str)
        or not isinstance(campaign_id, str)
        or isinstance(epoch_us, bool)
        or not isinstance(epoch_us, int)
        or agent not in (0, 1)
        or isinstance(agent, bool)
        or not isinstance(letters, str)
        or any(letter not in _TRIGGERS_BY_LETTER for letter in letters)
    ):
        raise ValueError(_row_problem(index, row))
    return CalleeCall(
        call_id=call_id,
        campaign_id=campaign_id,
        originated_at=EPOCH + epoch_us * MICROSECOND,
        agent_guaranteed=bool(agent),
        triggers=_triggers(letters),
    )


def _row_problem(index: int, row: object) -> str:
    # Built only for a bad row: the repr of every good one cost more than reading it.
    return (
        f"callee history row {index}: expected [call_id, campaign_id, epoch_us, 0|1, "
        f"trigger letters], got {row!r}"
    )
