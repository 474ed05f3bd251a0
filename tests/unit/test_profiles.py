"""Rule profiles: shipped data, strict parsing, per-campaign overrides (never half-applied)."""

from __future__ import annotations

from datetime import date, time
from fractions import Fraction
from pathlib import Path

import pytest

import services.detector.core.profiles as profiles_module
from services.detector.core.profiles import (
    EARLY_WARNING_WINDOWS,
    CallingHours,
    HoursRange,
    Profile,
    ProfileError,
    available_profiles,
    load_profile,
    load_profile_file,
    override_keys,
    retention_refusal,
)

PROFILES_DIR = Path(profiles_module.__file__).resolve().parent.parent / "profiles"
SHIPPED = ("fr", "it", "it-assocontact", "uk", "us")


def hours(*texts: str) -> tuple[HoursRange, ...]:
    return tuple(HoursRange.parse(t) for t in texts)


ALL_DAY = hours("00:00-24:00")

# --- HoursRange and CallingHours --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        pytest.param("09:00-20:00", 540, 1200, id="it-weekday"),
        pytest.param("00:00-24:00", 0, 1440, id="whole-day-with-24:00-end"),
        pytest.param("14:00\u201320:00", 840, 1200, id="en-dash-accepted"),
        pytest.param(" 10:00 - 13:00 ", 600, 780, id="spaces-accepted"),
    ],
)
def test_hours_range_parse(text: str, start: int, end: int) -> None:
    parsed = HoursRange.parse(text)
    assert (parsed.start_minute, parsed.end_minute) == (start, end)
    assert HoursRange.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "9-20",
        "09:00",
        "20:00-09:00",
        "09:00-09:00",
        "24:00-24:00",
        "09:60-10:00",
        "25:00-26:00",
        "24:30-24:45",
        "09:00-20:00-21:00",
        "9:00-20:00",
    ],
)
def test_hours_range_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        HoursRange.parse(text)


@pytest.mark.parametrize(("start", "end"), [(-1, 10), (10, 10), (10, 5), (0, 1441)])
def test_hours_range_bounds_checked(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        HoursRange(start, end)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        pytest.param(time(8, 59, 59, 999999), False, id="08:59:59.999999-out"),
        pytest.param(time(9, 0), True, id="09:00:00-in"),
        pytest.param(time(19, 59, 59, 999999), True, id="19:59:59.999999-in"),
        pytest.param(time(20, 0), False, id="20:00:00-out-half-open"),
    ],
)
def test_hours_range_is_half_open(moment: time, inside: bool) -> None:
    assert HoursRange.parse("09:00-20:00").contains(moment) is inside


def test_whole_day_range_contains_midnight_and_last_microsecond() -> None:
    whole = HoursRange.parse("00:00-24:00")
    assert whole.contains(time(0, 0)) and whole.contains(time(23, 59, 59, 999999))


CH = CallingHours(
    weekdays=(*(hours("09:00-20:00"),) * 5, hours("10:00-19:00"), ()),
    pre_holiday=hours("10:00-19:00"),
    holiday=(),
    advisory=False,
)


@pytest.mark.parametrize(
    ("moment", "weekday", "pre_holiday", "holiday", "allowed"),
    [
        pytest.param(time(9, 30), 0, False, False, True, id="weekday-in"),
        pytest.param(time(9, 30), 0, True, False, False, id="pre-holiday-narrows-weekday"),
        pytest.param(time(12, 0), 0, True, False, True, id="pre-holiday-noon-in"),
        pytest.param(time(12, 0), 0, False, True, False, id="holiday-closed"),
        pytest.param(time(12, 0), 0, True, True, False, id="holiday-wins-over-pre-holiday"),
        pytest.param(time(12, 0), 6, False, False, False, id="sunday-closed"),
        pytest.param(time(12, 0), 6, True, False, False, id="sunday-pre-holiday-stays-closed"),
        pytest.param(time(10, 0), 5, False, False, True, id="saturday-10:00-in"),
    ],
)
def test_calling_hours_allows(
    moment: time, weekday: int, pre_holiday: bool, holiday: bool, allowed: bool
) -> None:
    assert CH.allows(moment, weekday, pre_holiday=pre_holiday, holiday=holiday) is allowed


def test_calling_hours_without_pre_holiday_rule_ignores_pre_holidays() -> None:
    no_rule = CallingHours(CH.weekdays, None, (), False)
    assert no_rule.allows(time(9, 30), 0, pre_holiday=True)


def test_calling_hours_need_seven_days() -> None:
    with pytest.raises(ValueError, match="7 weekdays"):
        CallingHours(CH.weekdays[:6], None, (), False)


# --- shipped profiles -------------------------------------------------------------------------


def test_available_profiles_are_the_shipped_files() -> None:
    assert available_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_with_sources(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert isinstance(profile.reviewed, date)
    assert profile.connect_limit_seconds == 2
    assert profile.short_ring_min_seconds == 15
    required = {
        "home_zone",
        "holiday_country",
        "connect_limit_seconds",
        "short_ring_min_seconds",
        "amd_false_positive_ratio",
        "warning_fraction",
        "min_sample",
        "calling_hours",
    }
    assert required <= set(profile.sources)
    references: list[tuple[str, str]] = [
        *((r.id, r.reference) for r in profile.rate_rules),
        *((r.id, r.reference) for r in profile.per_call_rules),
        *((r.id, r.reference) for r in profile.lockouts),
        *((r.id, r.reference) for r in profile.frequency_caps),
    ]
    assert all(profile.sources[rule_id] == reference for rule_id, reference in references)
    assert all(rule.reference for rule in profile.early_warning)


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_is_hashable_and_immutable(name: str) -> None:
    profile = load_profile(name)
    assert hash(profile) == hash(load_profile(name))
    with pytest.raises(TypeError):
        profile.sources["home_zone"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        profile.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", SHIPPED)
def test_load_profile_file_matches_load_profile(name: str) -> None:
    assert load_profile_file(PROFILES_DIR / f"{name}.toml") == load_profile(name)


RULES = [
    pytest.param(
        "it",
        "it-silent-rate-cumulative",
        "silent",
        "cumulative",
        Fraction(3, 100),
        True,
        id="garante-2014-it-3pct-cumulative-on",
    ),
    pytest.param(
        "it",
        "it-silent-rate-daily",
        "silent",
        "daily",
        Fraction(4, 100),
        False,
        id="garante-2014-it-4pct-daily-off",
    ),
    pytest.param(
        "it-assocontact",
        "it-assocontact-silent-rate-cumulative",
        "silent",
        "cumulative",
        Fraction(3, 100),
        True,
        id="assocontact-3pct-cumulative-on",
    ),
    pytest.param(
        "uk",
        "uk-abandoned-rate-calendar-day",
        "abandoned",
        "calendar_day",
        Fraction(3, 100),
        True,
        id="ofcom-3pct-calendar-day",
    ),
    pytest.param(
        "uk",
        "uk-abandoned-rate-sliding-24h",
        "abandoned",
        "sliding_24h",
        Fraction(3, 100),
        True,
        id="ofcom-3pct-sliding-24h",
    ),
    pytest.param(
        "us",
        "us-abandoned-rate-period-30d",
        "abandoned",
        "period_30d",
        Fraction(3, 100),
        True,
        id="ftc-fcc-3pct-30-day-periods",
    ),
]


@pytest.mark.parametrize(("name", "rule_id", "metric", "window", "cap", "enabled"), RULES)
def test_shipped_rate_rules(
    name: str, rule_id: str, metric: str, window: str, cap: Fraction, enabled: bool
) -> None:
    rule = {r.id: r for r in load_profile(name).rate_rules}[rule_id]
    assert (rule.metric, rule.window, rule.cap, rule.enabled) == (metric, window, cap, enabled)
    assert (rule.warning_fraction, rule.min_sample) == (Fraction(4, 5), 100)


@pytest.mark.parametrize("name", ["it", "it-assocontact", "uk", "us"])
def test_early_warning_windows_follow_the_main_rule(name: str) -> None:
    profile = load_profile(name)
    main = profile.rate_rules[0]
    assert tuple(r.window for r in profile.early_warning) == EARLY_WARNING_WINDOWS
    for rule in profile.early_warning:
        assert rule.id == f"{name}-{main.metric}-rate-{rule.window}"
        assert (rule.metric, rule.cap, rule.warning_fraction, rule.min_sample) == (
            main.metric,
            main.cap,
            main.warning_fraction,
            main.min_sample,
        )
        assert rule.enabled


def test_fr_has_no_rate_rule_but_frequency_and_refusal_lockout() -> None:
    fr = load_profile("fr")
    assert fr.rate_rules == () and fr.early_warning == ()
    assert [(c.max_calls, c.window_days) for c in fr.frequency_caps] == [(4, 30)]
    assert [(lo.trigger, lo.calendar_days, lo.agent_guaranteed_exempt) for lo in fr.lockouts] == [
        ("refusal", 60, False)
    ]
    assert fr.calling_hours.weekdays[0] == hours("10:00-13:00", "14:00-20:00")
    assert fr.calling_hours.weekdays[5:] == ((), ())
    assert (fr.home_zone, fr.holiday_country) == ("Europe/Paris", "FR")


def test_it_numbers() -> None:
    it = load_profile("it")
    assert (it.home_zone, it.holiday_country) == ("Europe/Rome", "IT")
    assert it.silent_release_max_seconds == 3
    assert it.calling_hours == CallingHours(
        weekdays=(*(hours("09:00-20:00"),) * 5, hours("10:00-19:00"), ()),
        pre_holiday=hours("10:00-19:00"),
        holiday=(),
        advisory=False,
    )
    assert it.silent_wait_max_seconds == 3
    lockout, next_call = it.lockouts
    assert (lockout.trigger, lockout.hours, lockout.agent_guaranteed_exempt) == (
        "silent",
        120,
        False,
    )
    assert (next_call.trigger, next_call.hours, next_call.agent_guaranteed_exempt) == (
        "silent",
        240,
        True,
    )
    assert next_call.after == lockout and lockout.after is None
    assert {r.check for r in it.per_call_rules} >= {"silent_release", "silent_wait"}
    assert it.amd_false_positive_ratio == 0
    assert dict(it.state_hours) == {}


def test_it_assocontact_has_no_pre_holiday_rule_and_later_evenings() -> None:
    hours_ = load_profile("it-assocontact").calling_hours
    assert hours_.pre_holiday is None
    assert hours_.weekdays[0] == hours("09:00-21:00")
    assert hours_.weekdays[5] == hours("10:00-19:00")
    assert hours_.weekdays[6] == () and hours_.holiday == ()


def test_it_changed_numbers_cite_the_garante_provision_and_carry_the_review_date() -> None:
    """Issue 10: each changed `it` number cites the 2014 provision and is reviewed."""
    it = load_profile("it")
    provision = (
        "Garante, provvedimento generale 20 February 2014, registro n. 83, "
        "Gazzetta Ufficiale n. 79 of 4 April 2014"
    )
    changed = [
        "silent_release_max_seconds",
        "silent_wait_max_seconds",
        "min_sample",
        "min_retention_days",
        "it-silent-rate-cumulative",
        "it-long-silent-wait",
        "it-silent-lockout",
        "it-silent-next-call",
    ]
    for key in changed:
        assert provision in it.sources[key], key
        assert it.sources[f"reviewed:{key}"] == "2026-12-02", key
    assert it.reviewed == date(2026, 12, 2)


@pytest.mark.parametrize(
    ("days", "names", "refused_by"),
    [
        pytest.param(729, None, "it", id="garante-2014-it-sc1-729-days-refused"),
        pytest.param(730, None, None, id="garante-2014-it-sc1-2-years-ok"),
        pytest.param(
            400, ["it-assocontact"], "it-assocontact", id="garante-2014-assocontact-refused"
        ),
        pytest.param(30, ["uk", "fr", "us"], None, id="no-minimum-outside-italy"),
    ],
)
def test_retention_shorter_than_a_profile_minimum_is_refused(
    days: int, names: list[str] | None, refused_by: str | None
) -> None:
    refusal = retention_refusal(days, names)
    if refused_by is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert f"profile {refused_by!r} requires" in refusal
        assert f"a retention of {days} days" in refusal
        assert "conservare per almeno due anni" in refusal


def test_uk_numbers() -> None:
    uk = load_profile("uk")
    assert (uk.home_zone, uk.holiday_country) == ("Europe/London", "GB")
    assert uk.calling_hours.advisory
    assert uk.calling_hours.weekdays == (hours("08:00-21:00"),) * 7
    assert uk.calling_hours.holiday == ALL_DAY and uk.calling_hours.pre_holiday is None
    assert uk.silent_release_max_seconds is None and uk.message_start_max_seconds == 2
    assert {(lo.trigger, lo.hours, lo.calendar_days) for lo in uk.lockouts} == {
        ("abandoned", 72, None),
        ("amd_machine", None, 0),
    }
    checks = {rule.check: rule.advisory for rule in uk.per_call_rules}
    assert checks["out_of_hours"] is True and checks["silent_call"] is False


STATES = [
    ("US-FL", hours("08:00-20:00"), hours("08:00-20:00"), ALL_DAY),
    ("US-OK", hours("08:00-20:00"), hours("08:00-20:00"), ALL_DAY),
    ("US-MD", hours("08:00-20:00"), hours("08:00-20:00"), ALL_DAY),
    ("US-AL", hours("08:00-20:00"), (), ()),
    ("US-LA", hours("08:00-20:00"), (), ()),
    ("US-MS", hours("08:00-20:00"), (), ALL_DAY),
    ("US-KY", hours("10:00-21:00"), hours("10:00-21:00"), ALL_DAY),
    ("US-MA", hours("08:00-20:00"), hours("08:00-20:00"), ALL_DAY),
    ("US-MI", hours("09:00-21:00"), hours("09:00-21:00"), ALL_DAY),
    ("US-MN", hours("09:00-21:00"), hours("09:00-21:00"), ALL_DAY),
    ("US-NM", hours("09:00-21:00"), hours("09:00-21:00"), ALL_DAY),
    ("US-NV", hours("09:00-20:00"), hours("09:00-20:00"), ALL_DAY),
    ("US-TX", hours("09:00-21:00"), hours("12:00-21:00"), ALL_DAY),
]


@pytest.mark.parametrize(
    ("region", "weekday", "sunday", "holiday"), STATES, ids=[s[0] for s in STATES]
)
def test_us_state_hours(
    region: str,
    weekday: tuple[HoursRange, ...],
    sunday: tuple[HoursRange, ...],
    holiday: tuple[HoursRange, ...],
) -> None:
    state = load_profile("us").state_hours[region]
    assert state.weekdays[:6] == (weekday,) * 6
    assert state.weekdays[6] == sunday
    assert state.holiday == holiday
    assert not state.advisory
    assert load_profile("us").sources[f"state_hours.{region}"]


def test_us_federal_hours_and_home_zone() -> None:
    us = load_profile("us")
    assert us.home_zone == "America/New_York" and us.holiday_country == "US"
    assert us.calling_hours.weekdays == (hours("08:00-21:00"),) * 7
    assert us.hours_for("US-FL") is us.state_hours["US-FL"]
    assert us.hours_for("US-NY") is us.calling_hours
    assert us.hours_for(None) is us.calling_hours


def test_load_profile_is_cached() -> None:
    assert load_profile("it") is load_profile("it")


@pytest.mark.parametrize("name", ["xx", "../it", "us_states", "IT", ""])
def test_unknown_profile_name_is_refused(name: str) -> None:
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile(name)


# --- overrides --------------------------------------------------------------------------------


def test_override_keys() -> None:
    assert override_keys() == {
        "connect_limit_seconds",
        "short_ring_min_seconds",
        "silent_release_max_seconds",
        "message_start_max_seconds",
        "silent_wait_max_seconds",
        "amd_false_positive_ratio",
        "min_sample",
        "warning_fraction",
        "silent_rate_max",
        "abandoned_rate_max",
        "daily_silent_rate_max",
        "daily_abandoned_rate_max",
        "cumulative_rule_enabled",
        "daily_rule_enabled",
        "calendar_day_rule_enabled",
        "sliding_24h_rule_enabled",
        "period_30d_rule_enabled",
        "early_warning_enabled",
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_every_applicable_override_key_is_accepted(name: str) -> None:
    profile = load_profile(name)
    for key in override_keys(profile):
        value: object = True if key.endswith("_enabled") else 1 if key == "min_sample" else "1/2"
        load_profile(name, {key: value})


def test_overrides_apply_on_top_of_the_file() -> None:
    base = load_profile("it")
    profile = load_profile(
        "it", {"silent_rate_max": "0.05", "min_sample": 50, "daily_rule_enabled": True}
    )
    rules = {r.id: r for r in (*profile.rate_rules, *profile.early_warning)}
    assert rules["it-silent-rate-cumulative"].cap == Fraction(1, 20)
    assert all(rules[f"it-silent-rate-{w}"].cap == Fraction(1, 20) for w in EARLY_WARNING_WINDOWS)
    assert rules["it-silent-rate-daily"].cap == Fraction(4, 100)
    assert rules["it-silent-rate-daily"].enabled
    assert all(rule.min_sample == 50 for rule in rules.values())
    assert profile.sources["silent_rate_max"].startswith("per-campaign override")
    assert "it-silent-rate-cumulative cap 3/100" in profile.sources["silent_rate_max"]
    assert load_profile("it") == base  # the cached base is untouched
    assert base.rate_rules[0].cap == Fraction(3, 100)


@pytest.mark.parametrize(
    ("overrides", "attribute", "expected"),
    [
        pytest.param({"connect_limit_seconds": 3}, "connect_limit_seconds", Fraction(3), id="int"),
        pytest.param(
            {"connect_limit_seconds": "2.5"},
            "connect_limit_seconds",
            Fraction(5, 2),
            id="decimal-string",
        ),
        pytest.param(
            {"short_ring_min_seconds": "31/2"},
            "short_ring_min_seconds",
            Fraction(31, 2),
            id="fraction-string",
        ),
        pytest.param(
            {"amd_false_positive_ratio": 0.1},
            "amd_false_positive_ratio",
            Fraction(1, 10),
            id="json-float-exact",
        ),
        pytest.param(
            {"silent_release_max_seconds": 2},
            "silent_release_max_seconds",
            Fraction(2),
            id="garante-release-limit",
        ),
    ],
)
def test_scalar_overrides(overrides: dict[str, object], attribute: str, expected: Fraction) -> None:
    assert getattr(load_profile("it", overrides), attribute) == expected


def test_float_cap_is_read_exactly() -> None:
    rule = load_profile("us", {"abandoned_rate_max": 0.03}).rate_rules[0]
    assert rule.cap == Fraction(3, 100)


def test_daily_cap_override_leaves_the_cumulative_cap() -> None:
    profile = load_profile("it", {"daily_silent_rate_max": "5/100"})
    caps = {r.window: r.cap for r in (*profile.rate_rules, *profile.early_warning)}
    assert caps["daily"] == Fraction(5, 100) and caps["cumulative"] == Fraction(3, 100)


def test_disable_rules_and_early_warning() -> None:
    profile = load_profile(
        "uk", {"sliding_24h_rule_enabled": False, "early_warning_enabled": False}
    )
    assert {r.window: r.enabled for r in profile.rate_rules} == {
        "calendar_day": True,
        "sliding_24h": False,
    }
    assert not any(r.enabled for r in profile.early_warning)


BAD_OVERRIDES = [
    pytest.param(
        "it", {"silent_rate_mx": "0.05"}, "silent_rate_mx", "unknown parameter", id="unknown-key"
    ),
    pytest.param("it", {"silent_rate_max": "1.5"}, "silent_rate_max", "(0, 1]", id="cap-above-one"),
    pytest.param("it", {"silent_rate_max": 0}, "silent_rate_max", "(0, 1]", id="cap-zero"),
    pytest.param("it", {"silent_rate_max": -0.01}, "silent_rate_max", "(0, 1]", id="cap-negative"),
    pytest.param(
        "it", {"silent_rate_max": "3%"}, "silent_rate_max", "not a number", id="cap-percent-sign"
    ),
    pytest.param(
        "it",
        {"silent_rate_max": "3/0"},
        "silent_rate_max",
        "not a number",
        id="cap-division-by-zero",
    ),
    pytest.param(
        "it", {"silent_rate_max": float("nan")}, "silent_rate_max", "finite", id="cap-nan"
    ),
    pytest.param("it", {"silent_rate_max": True}, "silent_rate_max", "boolean", id="cap-boolean"),
    pytest.param(
        "it", {"silent_rate_max": None}, "silent_rate_max", "expected a number", id="cap-null"
    ),
    pytest.param("it", {"min_sample": "50"}, "min_sample", "integer", id="min-sample-string"),
    pytest.param("it", {"min_sample": 0}, "min_sample", ">= 1", id="min-sample-zero"),
    pytest.param("it", {"min_sample": 50.0}, "min_sample", "integer", id="min-sample-float"),
    pytest.param(
        "it", {"warning_fraction": "6/5"}, "warning_fraction", "(0, 1]", id="warning-above-cap"
    ),
    pytest.param(
        "it",
        {"daily_rule_enabled": "yes"},
        "daily_rule_enabled",
        "true or false",
        id="enabled-not-bool",
    ),
    pytest.param(
        "it", {"connect_limit_seconds": 0}, "connect_limit_seconds", "> 0", id="connect-limit-zero"
    ),
    pytest.param(
        "it",
        {"amd_false_positive_ratio": 2},
        "amd_false_positive_ratio",
        "[0, 1]",
        id="ratio-above-one",
    ),
    pytest.param(
        "uk", {"silent_rate_max": "0.05"}, "silent_rate_max", "no rule", id="uk-has-no-silent-rate"
    ),
    pytest.param(
        "us",
        {"daily_rule_enabled": True},
        "daily_rule_enabled",
        "no such rule",
        id="us-has-no-daily-rule",
    ),
    pytest.param(
        "us",
        {"silent_release_max_seconds": 3},
        "silent_release_max_seconds",
        "release",
        id="us-has-no-release-rule",
    ),
    pytest.param(
        "it",
        {"message_start_max_seconds": 2},
        "message_start_max_seconds",
        "message",
        id="it-has-no-message-limit",
    ),
    pytest.param("fr", {"min_sample": 50}, "min_sample", "no rate rule", id="fr-has-no-rate-rule"),
    pytest.param(
        "fr",
        {"early_warning_enabled": True},
        "early_warning_enabled",
        "no such rule",
        id="fr-has-no-early-warning",
    ),
]


@pytest.mark.parametrize(("name", "overrides", "key", "problem"), BAD_OVERRIDES)
def test_bad_override_is_refused_naming_the_key(
    name: str, overrides: dict[str, object], key: str, problem: str
) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(name, overrides)
    assert f"override {key!r}" in str(info.value)
    assert problem in str(info.value)


def test_overrides_are_never_half_applied() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("it", {"connect_limit_seconds": 3, "min_sample": 0, "bogus": 1})
    message = str(info.value)
    assert "'min_sample'" in message and "'bogus'" in message
    assert "'connect_limit_seconds'" not in message
    assert load_profile("it").connect_limit_seconds == 2
    assert load_profile("it").rate_rules[0].min_sample == 100


def test_overrides_must_be_a_mapping() -> None:
    with pytest.raises(ProfileError, match="mapping"):
        load_profile("it", ["silent_rate_max"])  # type: ignore[arg-type]


def test_empty_overrides_return_the_base_profile() -> None:
    assert load_profile("it", {}) is load_profile("it")


def test_override_keys_for_a_profile() -> None:
    assert "silent_rate_max" in override_keys(load_profile("it"))
    assert "silent_rate_max" not in override_keys(load_profile("uk"))
    assert "abandoned_rate_max" in override_keys(load_profile("uk"))
    assert override_keys(load_profile("fr")) == {
        "connect_limit_seconds",
        "short_ring_min_seconds",
        "amd_false_positive_ratio",
    }


# --- bad files --------------------------------------------------------------------------------


def write_profile(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of shipped `name` (and its state table) with `old` replaced by `new` once."""
    text = (PROFILES_DIR / f"{name}.toml").read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in {name}.toml"
    (tmp_path / f"{name}.toml").write_text(text.replace(old, new, 1), encoding="utf-8")
    states = PROFILES_DIR / "us_states.toml"
    (tmp_path / "us_states.toml").write_text(states.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path / f"{name}.toml"


BAD_FILES = [
    pytest.param("it", 'name = "it"', 'name = "it', "not valid TOML", id="toml-syntax-error"),
    pytest.param(
        "it",
        'name = "it"',
        'name = "italy"',
        "name: 'italy' does not match",
        id="name-not-file-name",
    ),
    pytest.param(
        "it",
        "reviewed = 2026-12-02",
        'reviewed = "recently"',
        "reviewed: expected a TOML date",
        id="reviewed-not-a-date",
    ),
    pytest.param(
        "it",
        "reviewed = 2026-12-02",
        "reviewed = 2026-12-02\nsilent_cap = 3",
        "silent_cap: unknown key",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "it",
        'cap = "3/100"',
        'cap = "3/0"',
        "rate_rules[0].cap: '3/0' is not a number",
        id="cap-division-by-zero",
    ),
    pytest.param(
        "it",
        'cap = "3/100"',
        'cap = "1.5"',
        "rate_rules[0].cap: a cap must be in (0, 1]",
        id="cap-above-one",
    ),
    pytest.param(
        "it",
        'cap = "3/100"',
        "cap = true",
        "rate_rules[0].cap: expected a number, got a boolean",
        id="cap-boolean",
    ),
    pytest.param(
        "it", 'cap = "4/100"', 'cap = "abc"', "rate_rules[1].cap", id="second-rule-cap-named"
    ),
    pytest.param(
        "it",
        'window = "cumulative"',
        'window = "weekly"',
        "rate_rules[0].window: 'weekly' is not one of",
        id="unknown-window",
    ),
    pytest.param(
        "it", 'metric = "silent"', 'metric = "dropped"', "rate_rules[0].metric", id="unknown-metric"
    ),
    pytest.param(
        "it",
        'id = "it-silent-rate-cumulative"',
        'id = "it-silent-cumulative"',
        "should be 'it-silent-rate-cumulative'",
        id="rate-rule-id-pattern",
    ),
    pytest.param(
        "it",
        'monday_to_friday = ["09:00-20:00"]',
        'monday_to_friday = ["9-20"]',
        "calling_hours.monday_to_friday: '9-20'",
        id="hours-not-hh:mm",
    ),
    pytest.param(
        "it",
        'monday_to_friday = ["09:00-20:00"]',
        'monday_to_friday = ["09:00-13:00", "12:00-20:00"]',
        "overlap",
        id="hours-overlap",
    ),
    pytest.param(
        "it",
        'monday_to_friday = ["09:00-20:00"]',
        "",
        "calling_hours.monday: missing",
        id="weekday-missing",
    ),
    pytest.param(
        "it", "holiday = []", "", "calling_hours.holiday: missing", id="holiday-hours-missing"
    ),
    pytest.param(
        "it",
        'value = "Europe/Rome"',
        'value = "Europe/Roma"',
        "home_zone.value: unknown time zone 'Europe/Roma'",
        id="unknown-zone",
    ),
    pytest.param(
        "it",
        'value = "IT"',
        'value = "XX"',
        "holiday_country.value: no national holiday calendar",
        id="unknown-holiday-country",
    ),
    pytest.param(
        "it",
        'value = "3", source = "Garante',
        'value = "3", sauce = "Garante',
        "silent_release_max_seconds.source: missing",
        id="parameter-source-typo",
    ),
    pytest.param(
        "it",
        'value = "3", source = "Garante',
        'value = "3", unit = "s", source = "Garante',
        "silent_release_max_seconds.unit: unknown key",
        id="parameter-extra-key",
    ),
    pytest.param(
        "it",
        'warning_fraction = { value = "4/5", source = "SPEC \'Alerts\': a rate rule warns at '
        '80 % of its cap" }',
        'warning_fraction = "4/5"',
        "warning_fraction: expected a table",
        id="parameter-without-source",
    ),
    pytest.param(
        "it",
        'follows = "it-silent-rate-cumulative"',
        'follows = "it-silent-rate-weekly"',
        "early_warning.follows",
        id="early-warning-follows-unknown-rule",
    ),
    pytest.param(
        "it",
        'windows = ["15m", "1h", "24h"]',
        'windows = ["15m", "2h"]',
        "early_warning.windows",
        id="early-warning-unknown-window",
    ),
    pytest.param(
        "it",
        "hours = 120",
        "hours = 120\ncalendar_days = 5",
        "lockouts[0].hours: give exactly one",
        id="lockout-both-lengths",
    ),
    pytest.param(
        "it",
        'after = "it-silent-lockout"',
        'after = "it-silent-lock"',
        "lockouts[1].after: 'it-silent-lock' is not an earlier lockout",
        id="lockout-after-unknown",
    ),
    pytest.param(
        "it",
        "hours = 240",
        "hours = 120",
        "lockouts[1].after: 'it-silent-lockout' must be shorter",
        id="lockout-after-not-shorter",
    ),
    pytest.param(
        "it",
        "hours = 240",
        "calendar_days = 10",
        "lockouts[1].after: 'it-silent-lockout' must be shorter, in the same unit",
        id="lockout-after-other-unit",
    ),
    pytest.param(
        "it",
        "silent_wait_max_seconds = {",
        "silent_wait_max = {",
        "per_call_rules[3].check: silent_wait needs silent_wait_max_seconds",
        id="silent-wait-limit-misspelt",
    ),
    pytest.param(
        "it",
        "agent_guaranteed_exempt = false\nreviewed = 2026-12-02",
        'agent_guaranteed_exempt = false\nreviewed = "2026-12-02"',
        "lockouts[0].reviewed: expected a TOML date",
        id="rule-reviewed-not-a-date",
    ),
    pytest.param(
        "it",
        'id = "it-comfort-noise"',
        'id = "it-silent-release"',
        "'it-silent-release' is used more than once",
        id="duplicate-rule-id",
    ),
    pytest.param(
        "it",
        'check = "comfort_noise"',
        'check = "noise"',
        "per_call_rules[2].check",
        id="unknown-per-call-check",
    ),
    pytest.param(
        "us",
        'value = "us_states.toml"',
        'value = "../us_states.toml"',
        "state_hours_file",
        id="state-file-path-refused",
    ),
    pytest.param(
        "us",
        'value = "us_states.toml"',
        'value = "missing.toml"',
        "cannot read missing.toml",
        id="state-file-missing",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "message"), BAD_FILES)
def test_bad_profile_file_is_refused_naming_file_and_key(
    tmp_path: Path, name: str, old: str, new: str, message: str
) -> None:
    path = write_profile(tmp_path, name, old, new)
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert str(info.value).startswith(f"{name}.toml: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            '[states."US-FL"]',
            '[states."Florida"]',
            "states.Florida: not a region code",
            id="bad-region-key",
        ),
        pytest.param(
            'every_day = ["08:00-20:00"]',
            'every_day = ["08:00-20"]',
            "states.US-AL.every_day",
            id="bad-state-hours",
        ),
        pytest.param(
            'name = "Texas"',
            'name = "Texas"\nfrequency = 3',
            "states.US-TX.frequency: unknown key",
            id="unknown-state-key",
        ),
    ],
)
def test_bad_state_table_is_refused_naming_the_state(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = write_profile(tmp_path, "us", "x", "x")
    states = tmp_path / "us_states.toml"
    states.write_text(states.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert str(info.value).startswith("us_states.toml: ")
    assert message in str(info.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="nope.toml: cannot read"):
        load_profile_file(tmp_path / "nope.toml")


def test_toml_float_cap_is_read_exactly(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "it", 'cap = "3/100"', "cap = 0.03")
    assert load_profile_file(path).rate_rules[0].cap == Fraction(3, 100)


def test_custom_profile_file_with_overrides(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "it", 'cap = "3/100"', 'cap = "2/100"')
    profile = load_profile_file(path, {"min_sample": 10})
    assert isinstance(profile, Profile)
    assert profile.rate_rules[0].cap == Fraction(2, 100)
    assert profile.rate_rules[0].min_sample == 10
