"""Per-call classification (SPEC "Classification", "Classification details"); pure.

For one CallRecord and its profile:

- `answered` = `answered_at` set.
- `amd_machine` = answered and `amd_result == "machine"` (an unanswered call is never counted
  as a machine, whatever AMD reported). `answered_by_person` = answered and not a machine:
  `human`, `notsure`, `hangup` and `none` (AMD not run, the default) all count as a person.
- `ref` = `greeting_ended_at` if present, else `answered_at` (conservative without VAD).
- `abandoned` = answered_by_person and (`agent_connected_at` absent, or
  `agent_connected_at − ref` > `profile.connect_limit_seconds`): 2.000 s is not abandoned,
  2.001 s is (16 CFR 310.4(b)(1)(iv); Ofcom UK-3; 2 s in every profile).
- `silent` = answered_by_person and `agent_connected_at` absent, whatever message or comfort
  noise played (Garante 20 Feb 2014 n. 83). Every silent call is also abandoned.
- `out_of_hours` = `originated_at` outside the profile's calling hours in every candidate zone
  (`calendar.is_within_calling_hours`; `callee_zones` empty: home zone; `callee_region` may
  select US state hours).
- `short_ring` = not answered, released by the system (`hangup_side` "system" or absent; not
  "callee" or "agent") and `ended_at − (ringing_at or originated_at)` < short_ring_min_seconds:
  14.999 s is short, 15.000 s is not (16 CFR 310.4(b)(4)(ii); Ofcom UK-4). Counted in every
  profile; alerting is a per-call rule of the profiles that have it.

Durations are exact: microsecond timedeltas compared as Fractions, never floats. Enumerations
(`amd_result`, `hangup_side`) are compared as ingest normalises them (lower case).

Per-call rules (`profile.per_call_rules`, by their `check`):

- `out_of_hours`: the call is out of hours (advisory in `uk`: alerts as a warning).
- `short_ring`: as above, where the profile has the rule (uk, us).
- `silent_release` (IT-SC-2): a silent call released more than `silent_release_max_seconds`
  (3 s) after answer; exactly 3.000 s is in time.
- `silent_wait` (IT-SC-2 "long silent wait"): a call answered by a person whose agent
  connected more than `silent_wait_max_seconds` (3 s) after `answered_at` (not after the
  greeting: the callee waits in silence from pick-up); 3.000 s is in time, 3.001 s is not.
  A silent call (no agent ever) is not a long wait: `silent_release` judges it.
- `comfort_noise` (IT-SC-4): a silent call whose dialer reports a `message_type` other than
  `comfort_noise`. When the dialer reports no `message_type` the call is `unverifiable` for
  the rule: not compliant, not a violation (issue 3).
- `message` (UK-2; 16 CFR 310.4(b)(4)(iii)): an abandoned call without an information message
  (any `message_type` but comfort noise) starting within `message_start_max_seconds` (2 s) of
  `ref`. A message type without `message_started_at` cannot be shown to start in time: it
  counts as missing (the safe side).
- `silent_call` (Ofcom 2016: any silent call is misuse): a silent call (nobody ever
  connected) with no information message (`message_type` absent or comfort noise). A call
  whose agent came late is abandoned, not silent: the `message` rule covers it.

`violations` and `unverifiable` list the ids of the enabled rules concerned, in profile order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from fractions import Fraction

from .calendar import is_within_calling_hours
from .model import CallOutcome, CallRecord
from .profiles import Profile

_MICROSECOND = timedelta(microseconds=1)

PerCallCheck = Callable[[CallRecord, CallOutcome, Profile], bool | None]
"""True: a violation; False: compliant; None: unverifiable (the dialer did not report it)."""
_INFORMATION_MESSAGES = frozenset({"info", "safe_harbor", "opt_out", "prerecorded"})


def _released_late(call: CallRecord, outcome: CallOutcome, profile: Profile) -> bool:
    limit = profile.silent_release_max_seconds
    if not outcome.silent or limit is None or call.answered_at is None:
        return False
    return _longer(call.answered_at, call.ended_at, limit)


def _waited_long(call: CallRecord, outcome: CallOutcome, profile: Profile) -> bool:
    limit = profile.silent_wait_max_seconds
    agent_at = call.agent_connected_at
    if not outcome.answered_by_person or limit is None or agent_at is None:
        return False
    assert call.answered_at is not None  # answered_by_person implies answered
    return _longer(call.answered_at, agent_at, limit)


def _no_comfort_noise(call: CallRecord, outcome: CallOutcome, _profile: Profile) -> bool | None:
    if not outcome.silent:
        return False
    if call.message_type is None:
        return None
    return call.message_type != "comfort_noise"


def _message_missing(call: CallRecord, outcome: CallOutcome, profile: Profile) -> bool:
    if not outcome.abandoned:
        return False
    if call.message_type not in _INFORMATION_MESSAGES or call.message_started_at is None:
        return True
    ref = call.greeting_ended_at or call.answered_at
    assert ref is not None  # abandoned implies answered
    limit = profile.message_start_max_seconds or profile.connect_limit_seconds
    return _longer(ref, call.message_started_at, limit)


def _silent_call(call: CallRecord, outcome: CallOutcome, _profile: Profile) -> bool:
    return outcome.silent and call.message_type not in _INFORMATION_MESSAGES


_PER_CALL_CHECKS: dict[str, PerCallCheck] = {
    "out_of_hours": lambda _call, outcome, _profile: outcome.out_of_hours,
    "short_ring": lambda _call, outcome, _profile: outcome.short_ring,
    "silent_release": _released_late,
    "silent_wait": _waited_long,
    "comfort_noise": _no_comfort_noise,
    "message": _message_missing,
    "silent_call": _silent_call,
}
"""PerCallRule.check -> predicate (see the module docstring)."""


def elapsed_seconds(start: datetime, end: datetime) -> Fraction:
    """`end − start` in seconds, exact to the microsecond (negative if end is earlier)."""
    return Fraction((end - start) // _MICROSECOND, 1_000_000)


def _longer(start: datetime, end: datetime, limit: Fraction) -> bool:
    """`elapsed_seconds(start, end) > limit`, in integers: no Fraction is built per call
    (classify runs once per CDR; the Fractions were a tenth of its cost)."""
    return (end - start) // _MICROSECOND * limit.denominator > limit.numerator * 1_000_000


def _shorter(start: datetime, end: datetime, limit: Fraction) -> bool:
    """`elapsed_seconds(start, end) < limit`, in integers (see `_longer`)."""
    return (end - start) // _MICROSECOND * limit.denominator < limit.numerator * 1_000_000


def classify(call: CallRecord, profile: Profile) -> CallOutcome:
    """What `call` counts as under `profile` (module docstring has every rule and edge)."""
    answered_at = call.answered_at
    answered = answered_at is not None
    amd_machine = answered and call.amd_result == "machine"
    by_person = answered and not amd_machine
    silent = by_person and call.agent_connected_at is None
    abandoned = silent
    agent_at = call.agent_connected_at
    if by_person and answered_at is not None and agent_at is not None:
        ref = call.greeting_ended_at or answered_at
        abandoned = _longer(ref, agent_at, profile.connect_limit_seconds)
    short_ring = (
        not answered
        and call.hangup_side in (None, "system")
        and _shorter(
            call.ringing_at or call.originated_at, call.ended_at, profile.short_ring_min_seconds
        )
    )
    outcome = CallOutcome(
        answered=answered,
        answered_by_person=by_person,
        amd_machine=amd_machine,
        silent=silent,
        abandoned=abandoned,
        out_of_hours=not is_within_calling_hours(
            call.originated_at, call.callee_zones, profile, call.callee_region
        ),
        short_ring=short_ring,
    )
    violations, unverifiable = per_call_violations(call, outcome, profile)
    if violations or unverifiable:
        return replace(outcome, violations=violations, unverifiable=unverifiable)
    return outcome


def per_call_violations(
    call: CallRecord, outcome: CallOutcome, profile: Profile
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(broken, unverifiable): ids of `profile`'s enabled per-call rules that `call` breaks,
    and of those it cannot be judged by (lockouts excluded: they need per-callee state)."""
    broken: list[str] = []
    unknown: list[str] = []
    for rule in profile.per_call_rules:
        check = _PER_CALL_CHECKS.get(rule.check)
        if not rule.enabled or check is None:
            continue
        verdict = check(call, outcome, profile)
        if verdict is None:
            unknown.append(rule.id)
        elif verdict:
            broken.append(rule.id)
    return tuple(broken), tuple(unknown)
