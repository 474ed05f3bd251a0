"""Hypothesis strategies for CDR v1 as a dialer (or an attacker) sends it.

- `answered_call()`: a well-formed call around `NOW` (valid enums, real numbers);
- `fuzzed_record()`: such a call with fields replaced by hostile values: instants at year 1
  and 9999 with offsets whose UTC conversion overflows, epoch seconds and astronomic epoch
  numbers, ids with control/format/surrogate/bidi characters, `/` and 128+ characters,
  `extra` nesting up to 1100 levels or megabytes large, unknown fields;
- building blocks: `INSTANTS`, `IDS`, `NESTED`, `deep_nesting()`, `EXTRA_VALUES`.

Shared by tests/unit/test_cdr_fuzz.py and tests/service/test_fuzz_api.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _rfc3339(moment: datetime, style: int) -> str:
    text = moment.isoformat()
    if style == 1 and moment.utcoffset() == timedelta(0):
        text = text.replace("+00:00", "Z")
    elif style == 2:
        text = text.replace("T", " ")
    return text


@st.composite
def instant_texts(draw: st.DrawFn) -> str:
    """RFC 3339 text anywhere in years 1..9999 with any offset (overflow included)."""
    naive = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))  # noqa: DTZ001
    moment = naive.replace(tzinfo=draw(OFFSETS))
    return _rfc3339(moment, draw(st.integers(0, 2)))


@st.composite
def plausible_instants(draw: st.DrawFn) -> str:
    """Around the ingest clock: what a real dialer sends (with a local offset)."""
    delta = draw(st.integers(min_value=-9 * 24 * 3600, max_value=2 * 3600))
    moment = (NOW + timedelta(seconds=delta)).astimezone(draw(OFFSETS))
    return _rfc3339(moment, draw(st.integers(0, 2)))


EXTREME_INSTANTS = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",  # UTC conversion underflows
        "9999-12-31T23:30:00-01:00",  # UTC conversion overflows
        "9999-12-31T23:59:59.999999999Z",
        "1999-12-31T23:59:59Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:59:59+01:00",
        "1970-01-01T00:00:00Z",
        "2026-03-02T10:15:00",  # no offset
        "2026-02-30T10:15:00Z",
        "2026-03-02T24:00:00Z",
        "2026-03-02T10:15:00+24:00",
        "2026-03-02t10:15:00z",
        "",
        "now",
        "٢٠٢٦-٠٣-٠٢T10:15:00Z",  # Arabic-Indic digits
    ]
)
EPOCH_NUMBERS = st.one_of(
    st.integers(),  # anything, negative and astronomic included
    st.integers(min_value=946_684_800, max_value=4_102_444_799),  # epoch seconds
    st.integers(min_value=946_684_800_000, max_value=253_402_300_799_999),  # epoch ms
    st.sampled_from([0, -1, 2**63, -(2**63), 10**100, 253_402_300_800_000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
INSTANTS = st.one_of(
    plausible_instants(),
    plausible_instants(),
    instant_texts(),
    EXTREME_INSTANTS,
    EPOCH_NUMBERS,
    st.none(),
    st.text(max_size=40),
)

ODD_CHARACTERS = st.sampled_from(
    [
        "\x00",
        "\x1b",
        "\x7f",
        "\u200b",  # zero-width space (Cf)
        "\u202e",  # right-to-left override (Cf)
        "\ufeff",
        "\ud800",  # lone surrogate (Cs)
        "\ue000",  # private use (Co)
        "\U000e0001",  # language tag (Cf)
        "\u0301",  # combining acute
        "\u3000",  # ideographic space
        "/",
        "\\",
        "%2F",
        "😀",
        "İ",
        "ß",
        " ",
        "\t",
        "\n",
    ]
)
IDS = st.one_of(
    st.text(min_size=1, max_size=20),
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=140),
    st.lists(st.one_of(ODD_CHARACTERS, st.text(max_size=3)), max_size=12).map("".join),
    st.integers(min_value=120, max_value=300).map(lambda n: "x" * n),
    st.integers(),
    st.none(),
    st.just(["list", "id"]),
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["+393471234567", "00393471234567", "3471234567"]),
)
NESTED = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> Any:
    """A value nesting up to 1100 levels of objects and arrays (orjson, the ingest parser,
    stops at 1024)."""
    depth = draw(st.integers(min_value=1, max_value=1100))
    value: Any = draw(JSON_SCALARS)
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


BIG_VALUES = st.one_of(
    st.integers(min_value=1, max_value=2_000_000).map(lambda n: "a" * n),
    st.integers(min_value=1, max_value=5000).map(lambda n: list(range(n))),
    st.integers(min_value=1, max_value=2000).map(lambda n: {f"k{i}": i for i in range(n)}),
)
EXTRA_VALUES = st.one_of(NESTED, deep_nesting(), BIG_VALUES)
CALLEE_NUMBERS = st.one_of(
    st.sampled_from(
        ["+393471234567", "+442079460000", "+12025550123", "+33612345678", "+390612345678"]
    ),
    st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    st.text(max_size=45),
    st.integers(),
)
ENUMS = {
    "dial_mode": ["predictive", "progressive", "preview", "manual", "agentless"],
    "amd_result": ["human", "machine", "notsure", "hangup", "none"],
    "message_type": ["comfort_noise", "info", "safe_harbor", "opt_out", "prerecorded"],
    "hangup_side": ["callee", "system", "agent"],
    "cli_presentation": ["allowed", "withheld"],
}
VALID_NUMBERS = st.sampled_from(
    ["+393471234567", "+442079460000", "+12025550123", "+33612345678", "+390612345678"]
)


@st.composite
def answered_call(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed call around the clock: the part that must pass and be classified."""
    start = NOW + timedelta(seconds=draw(st.integers(-8 * 24 * 3600, 3000)))
    offset = draw(OFFSETS)
    ring = draw(st.integers(0, 60))
    answer = draw(st.one_of(st.none(), st.integers(0, 60)))
    record: dict[str, Any] = {
        "call_id": draw(
            st.text(st.characters(categories=["L", "N", "P"]), min_size=1).filter(
                lambda s: "/" not in s and s.strip() != "" and len(s.strip()) <= 128
            )
        ),
        "campaign_id": draw(st.sampled_from(["c1", "campagna-è", "キャンペーン", "c 2"])),
        "callee_number": draw(VALID_NUMBERS),
        "originated_at": _rfc3339(start.astimezone(offset), 0),
    }
    ringing = start + timedelta(seconds=ring)
    record["ringing_at"] = ringing.isoformat()
    end = ringing + timedelta(seconds=draw(st.integers(0, 600)))
    if answer is not None:
        answered = ringing + timedelta(seconds=answer)
        end = max(end, answered)
        record["answered_at"] = answered.isoformat()
        if draw(st.booleans()):
            agent = answered + timedelta(milliseconds=draw(st.integers(0, 10_000)))
            end = max(end, agent)
            record["agent_connected_at"] = agent.isoformat()
    record["ended_at"] = end.isoformat()
    for name, values in ENUMS.items():
        if draw(st.booleans()):
            record[name] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        record["callee_tz"] = draw(st.sampled_from(["Europe/Rome", "America/New_York", "UTC"]))
    if draw(st.booleans()):
        record["callee_region"] = draw(st.sampled_from(["US-FL", "US-CA", "IT"]))
    return record


@st.composite
def fuzzed_record(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible call with any subset of its fields replaced by something hostile."""
    record = draw(answered_call())
    replacements = {
        "call_id": IDS,
        "campaign_id": IDS,
        "tenant_id": IDS,
        "call_center_id": IDS,
        "dialer_id": IDS,
        "agent_id": IDS,
        "callee_number": CALLEE_NUMBERS,
        "originated_at": INSTANTS,
        "ringing_at": INSTANTS,
        "answered_at": INSTANTS,
        "greeting_ended_at": INSTANTS,
        "agent_connected_at": INSTANTS,
        "message_started_at": INSTANTS,
        "ended_at": INSTANTS,
        "sip_code": st.one_of(st.integers(), st.text(max_size=5), st.floats()),
        "refusal": st.one_of(st.booleans(), st.text(max_size=5), st.integers()),
        "hangup_cause": st.one_of(st.text(max_size=600), st.integers()),
        "callee_country": st.sampled_from(["IT", "GB", "US", "ZZ", "it", "", "ITA"]),
        "callee_tz": st.one_of(
            st.sampled_from(["Mars/Olympus", "../etc/passwd", "Europe/Rome\x00", "UTC"]),
            st.text(max_size=70),
        ),
        "callee_region": st.one_of(st.sampled_from(["us-fl", "XX", "US-FLORIDA"]), st.text()),
        "dial_mode": st.one_of(st.sampled_from(["PREVIEW", "robot", ""]), st.integers()),
        "amd_result": st.one_of(st.sampled_from(["MACHINE", "robot"]), st.none()),
        "message_type": st.text(max_size=20),
        "hangup_side": st.one_of(st.sampled_from(["nobody", "Callee"]), st.integers()),
        "cli_presentation": st.text(max_size=10),
        "extra": st.one_of(
            st.dictionaries(st.text(max_size=10), EXTRA_VALUES, max_size=4), EXTRA_VALUES
        ),
    }
    for name in draw(st.sets(st.sampled_from(sorted(replacements)), max_size=4)):
        record[name] = draw(replacements[name])
    for name in draw(st.sets(st.sampled_from(sorted(record)), max_size=2)):
        if draw(st.booleans()):
            del record[name]
    unknown = draw(st.dictionaries(st.text(max_size=12), EXTRA_VALUES, max_size=3))
    for name, value in unknown.items():
        record.setdefault(name, value)
    return {k: v for k, v in record.items() if v is not None or draw(st.booleans())}
