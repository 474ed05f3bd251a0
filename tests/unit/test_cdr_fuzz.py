"""Fuzzing CDR v1 with hypothesis: whatever a dialer sends, validation either accepts the
record (and then normalisation, the detector's mapping and the pure core take it without an
exception) or rejects it with errors that each name a field of the record — never another
exception (issue 6, "what must exist" items 2 and 7).

Strategies cover the extremes the issue reproduced: instants at year 1 and 9999 with offsets
whose UTC conversion overflows, epoch seconds sent as milliseconds, numbers of every size,
`extra` nesting hundreds of levels deep or megabytes large, ids with control, format,
surrogate, bidi and combining characters, slashes and 128+ characters.

`CDRWATCH_FUZZ_EXAMPLES` sets the examples per property (default 200). The module prints how
many cases it ran.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.cdr_v1 import CdrV1, FieldError, parse_cdr
from services.detector.core.classify import classify
from services.detector.core.engine import (
    BucketState,
    CampaignConfig,
    CampaignState,
    DayViolations,
    Engine,
    Event,
)
from services.detector.core.profiles import load_profile
from services.detector.core.windows import MinuteIndex
from services.detector.wire import UnprocessableRecord, check_record, to_call_record
from services.ingest.normalize import Normalizer
from tests.cdr_strategies import (
    IDS,
    INSTANTS,
    NESTED,
    NOW,
    answered_call,
    deep_nesting,
    fuzzed_record,
)

EXAMPLES = int(os.environ.get("CDRWATCH_FUZZ_EXAMPLES", "200"))
PROFILES = {name: load_profile(name) for name in ("it", "uk", "us", "fr")}
NORMALIZER = Normalizer(b"fuzz-pseudonym-key-0123456789", lambda: NOW, timedelta(hours=1))
KNOWN_FIELDS = frozenset(CdrV1.model_fields)
# Fields an error may name besides the record's own keys.
GENERAL_FIELDS = frozenset({"(record)", "extra"})

CASES: Counter[str] = Counter()

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


@pytest.fixture(scope="module", autouse=True)
def _report_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"hypothesis (tests/unit/test_cdr_fuzz.py): {sum(CASES.values())} cases — " + ", ".join(
        f"{name} {count}" for name, count in sorted(CASES.items())
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)


# -- the properties -----------------------------------------------------------------------


class _DictState:
    """The engine's StateStore port on a dict (nothing persisted)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, ...], Any] = {}
        self.minutes = MinuteIndex()

    def get_seen(self, key: str) -> Any:
        return self.data.get(("s", key))

    def put_seen(self, key: str, value: Any, partition: int) -> None:
        self.data[("s", key)] = value

    def get_bucket(self, campaign_id: str, minute: int) -> BucketState | None:
        raw = self.data.get(("b", campaign_id, str(minute)))
        return None if raw is None else BucketState.from_json(raw)

    def put_bucket(self, campaign_id: str, minute: int, state: BucketState, partition: int) -> None:
        self.data[("b", campaign_id, str(minute))] = state.to_json()
        self.minutes.add(campaign_id, minute)

    def bucket_minutes(self, campaign_id: str, first: int, last_exclusive: int) -> list[int]:
        return self.minutes.between(campaign_id, first, last_exclusive)

    def get_day_violations(self, campaign_id: str, rule_id: str, day: Any) -> Any:
        raw = self.data.get(("v", campaign_id, rule_id, day.isoformat()))
        return None if raw is None else DayViolations.from_json(raw)

    def put_day_violations(
        self, campaign_id: str, rule_id: str, day: Any, state: Any, partition: int
    ) -> None:
        self.data[("v", campaign_id, rule_id, day.isoformat())] = state.to_json()

    def get_campaign(self, campaign_id: str) -> CampaignState | None:
        raw = self.data.get(("c", campaign_id))
        return None if raw is None else CampaignState.from_json(raw)

    def put_campaign(self, campaign_id: str, state: CampaignState, partition: int) -> None:
        self.data[("c", campaign_id)] = state.to_json()


def _assert_errors_name_fields(record: Any, errors: list[FieldError]) -> None:
    assert errors, "a rejection must say why"
    names = set(record) if isinstance(record, dict) else set()
    for error in errors:
        assert isinstance(error, FieldError)
        assert error.message.strip(), error
        assert len(error.message) <= 200 and len(error.field) <= 80, error
        top = error.field.split(".", 1)[0]
        assert top in names | KNOWN_FIELDS | GENERAL_FIELDS or any(
            error.field.startswith(name[:70]) for name in names if isinstance(name, str)
        ), f"error names no field of the record: {error}"


def check_one(record: Any) -> str:
    """Validate, then push an accepted record through every pure stage; the outcome name."""
    before = dict(record) if isinstance(record, dict) else record
    cdr, errors = parse_cdr(record, extra_fields_allowed=("dnis", "k", "campaign_note"))
    if isinstance(record, dict):
        assert record.keys() == before.keys(), "validation must not change its input"
        assert all(record[k] is before[k] for k in record), "validation must not change its input"
    if cdr is None:
        _assert_errors_name_fields(record, errors)
        return "rejected at validation"
    assert errors == []
    normalized, errors = NORMALIZER.normalize(cdr.model_copy(update={"tenant_id": "t1"}))
    if normalized is None:
        _assert_errors_name_fields(record, errors)
        return "rejected at normalisation"
    # What the detector does with it: a dead letter with a reason, or classification.
    normalized = type(normalized).model_validate_json(normalized.model_dump_json())
    try:
        check_record(normalized)
    except UnprocessableRecord as exc:
        assert str(exc)
        return "dead letter"
    call = to_call_record(normalized)
    for profile in PROFILES.values():
        outcome = classify(call, profile)
        assert outcome.silent <= outcome.answered_by_person <= outcome.answered
    engine = Engine(
        _DictState(),
        lambda _cid: CampaignConfig(PROFILES["it"]),
        lateness=timedelta(days=7),
        clock=lambda: NOW,
    )
    out = engine.process([Event(0, 0, call)])
    assert out.processed + out.too_late + len(out.dead_letters) >= 1
    return "accepted and classified"


@FUZZ
@given(answered_call())
def test_a_plausible_call_is_accepted_or_rejected_by_field_then_classified(
    record: dict[str, Any],
) -> None:
    CASES["plausible calls: " + check_one(record)] += 1


@FUZZ
@given(fuzzed_record())
def test_a_hostile_record_is_accepted_or_rejected_naming_a_field(record: dict[str, Any]) -> None:
    CASES["hostile records: " + check_one(record)] += 1


@FUZZ
@given(st.one_of(NESTED, deep_nesting(), st.lists(NESTED, max_size=3), IDS, INSTANTS))
def test_anything_that_is_not_a_record_is_rejected_as_a_record(value: Any) -> None:
    if isinstance(value, dict):
        CASES["non-records: " + check_one(value)] += 1
        return
    cdr, errors = parse_cdr(value)
    assert cdr is None and [e.field for e in errors] == ["(record)"]
    CASES["non-records: rejected at validation"] += 1


@pytest.mark.parametrize(
    "instant",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        1_772_446_500,  # epoch seconds
        -1,
        10**30,
    ],
    ids=[
        "year-1",
        "year-1-overflowing-offset",
        "year-9999-overflowing-offset",
        "epoch-seconds",
        "negative-epoch",
        "astronomic-epoch",
    ],
)
def test_each_extreme_instant_is_refused_naming_originated_at(instant: object) -> None:
    record = {
        "call_id": "c-1",
        "campaign_id": "c",
        "callee_number": "+393471234567",
        "originated_at": instant,
        "ended_at": "2026-03-02T10:17:00+01:00",
    }
    cdr, errors = parse_cdr(record)
    assert cdr is None
    assert {e.field for e in errors} == {"originated_at"}, errors
    CASES["extreme instants: rejected at validation"] += 1
