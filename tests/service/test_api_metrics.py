"""The api's /metrics: exact figures from the store, capped campaign labels, promtool."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from schemas.alert_v1 import AlertV1
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.app import create_app
from services.api.consumer import alert_message, apply_messages, stats_message
from services.api.metrics import ApiMetrics
from services.api.models import CampaignConfig
from services.api.store import AlertStore
from services.common.db import create_engine, migrate
from services.common.settings import ApiSettings

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


@pytest.fixture
async def store(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await migrate(engine)
    yield AlertStore(engine, clock=lambda: NOW)
    await engine.dispose()


def window(campaign: str, name: str = "cumulative", profile: str = "it", **values: int):
    counts = {field: values.get(field, 0) for field in COUNT_FIELDS}
    stats = stats_from_counts(campaign, T0, T0 + timedelta(minutes=30), counts)
    return stats_message(stats, name, profile=profile)


def firing(campaign: str, rule: str, severity: str, state: str = "firing"):
    return alert_message(
        AlertV1.model_validate(
            {
                "id": f"{rule}:{campaign}",
                "rule": rule,
                "profile": "it",
                "campaign_id": campaign,
                "severity": severity,
                "state": state,
                "value": 0.05,
                "threshold": 0.03,
                "numerator": 5,
                "denominator": 100,
                "window": {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:30:00Z"},
                "opened_at": "2026-03-02T10:20:00Z",
            }
        )
    )


def metrics_for(cap: int = 2000, newest=None) -> ApiMetrics:
    return ApiMetrics(
        CollectorRegistry(), campaign_cap=cap, clock=lambda: NOW, newest_output_at=lambda: newest
    )


async def test_rates_totals_and_firing_alerts_are_exact(store):
    await apply_messages(
        store,
        [
            window(
                "c1",
                attempts=400,
                answered_by_person=300,
                silent=9,
                abandoned=12,
                out_of_hours=4,
                short_ring=3,
                amd_machine=20,
                answered=330,
            ),
            window("c1", "15m", attempts=40, answered_by_person=0, out_of_hours=10),
            firing("c1", "it.silent_rate.cumulative", "warning"),
            firing("c2", "it.silent_rate.cumulative", "warning"),
            firing("c2", "it.out_of_hours.day", "violation"),
            firing("c3", "it.out_of_hours.day", "violation", state="resolved"),
        ],
    )
    metrics = metrics_for()
    await metrics.refresh(store)
    value = metrics.registry.get_sample_value
    labels = {"tenant": "default", "campaign": "c1", "profile": "it", "window": "cumulative"}
    assert value("cdrwatch_campaign_rate", labels | {"metric": "silent"}) == 9 / 300
    assert value("cdrwatch_campaign_rate", labels | {"metric": "abandoned"}) == 12 / 300
    assert value("cdrwatch_campaign_rate", labels | {"metric": "out_of_hours"}) == 4 / 400
    rolling = {"tenant": "default", "campaign": "c1", "profile": "it", "window": "15m"}
    assert value("cdrwatch_campaign_rate", rolling | {"metric": "out_of_hours"}) == 0.25
    # no rate while its denominator is 0
    assert value("cdrwatch_campaign_rate", rolling | {"metric": "silent"}) is None
    expected = {
        "attempts": 400,
        "answered_by_person": 300,
        "silent": 9,
        "abandoned": 12,
        "out_of_hours": 4,
        "short_ring": 3,
        "amd_machine": 20,
    }
    for outcome, total in expected.items():
        sample = value(
            "cdrwatch_campaign_calls_total",
            {"tenant": "default", "campaign": "c1", "outcome": outcome},
        )
        assert sample == total, outcome
    assert (
        value(
            "cdrwatch_campaign_calls_total",
            {"tenant": "default", "campaign": "c1", "outcome": "answered"},
        )
        is None
    )
    assert (
        value(
            "cdrwatch_alerts_firing",
            {"tenant": "default", "rule": "it.silent_rate.cumulative", "severity": "warning"},
        )
        == 2
    )
    assert (
        value(
            "cdrwatch_alerts_firing",
            {"tenant": "default", "rule": "it.out_of_hours.day", "severity": "violation"},
        )
        == 1
    )
    assert value("cdrwatch_detector_lag_seconds") is None


async def test_campaigns_beyond_the_cap_fold_into_other(store):
    # Seen in this order: a, b, then c and d beyond a cap of 2.
    for campaign, silent in (("a", 1), ("b", 2), ("c", 3), ("d", 6)):
        await apply_messages(
            store, [window(campaign, attempts=100, answered_by_person=100, silent=silent)]
        )
    metrics = metrics_for(cap=2)
    await metrics.refresh(store)
    value = metrics.registry.get_sample_value

    def silent_rate(campaign: str):
        labels = {
            "tenant": "default",
            "campaign": campaign,
            "profile": "it",
            "metric": "silent",
            "window": "cumulative",
        }
        return value("cdrwatch_campaign_rate", labels)

    assert (silent_rate("a"), silent_rate("b")) == (0.01, 0.02)
    assert silent_rate("c") is None
    assert silent_rate("_other") == (3 + 6) / 200  # from the summed counts, not averaged
    assert (
        value(
            "cdrwatch_campaign_calls_total",
            {"tenant": "default", "campaign": "_other", "outcome": "silent"},
        )
        == 9
    )
    assert (
        value(
            "cdrwatch_campaign_calls_total",
            {"tenant": "default", "campaign": "_other", "outcome": "attempts"},
        )
        == 200
    )
    campaigns = {
        sample.labels["campaign"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "campaign" in sample.labels
    }
    assert campaigns == {"a", "b", "_other"}


async def test_detector_lag_is_the_age_of_the_newest_consumed_output(store):
    metrics = metrics_for(newest=NOW - timedelta(seconds=2.5))
    await metrics.refresh(store)
    assert metrics.registry.get_sample_value("cdrwatch_detector_lag_seconds") == 2.5


async def test_metrics_endpoint_needs_a_viewer_token_and_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (make test installs it)")
    settings = ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
        metrics_campaign_cap=1,
    )
    app = create_app(settings, consumer_enabled=False, clock=lambda: NOW)
    async with app.router.lifespan_context(app):
        await apply_messages(
            app.state.store,
            [
                window("c1", attempts=10, answered_by_person=5, silent=1),
                window("c2", attempts=10, answered_by_person=5, abandoned=1),
                firing("c1", "it.silent_rate.cumulative", "violation"),
            ],
        )
        viewer = await app.state.tokens.create("viewer")
        ingest = await app.state.tokens.create("ingest")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            anonymous = await client.get("/metrics")
            forged = await client.get("/metrics", headers={"Authorization": "Bearer cdrw_x"})
            wrong_role = await client.get("/metrics", headers={"Authorization": f"Bearer {ingest}"})
            response = await client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert (anonymous.status_code, forged.status_code, wrong_role.status_code) == (401, 401, 403)
    assert "cdrwatch" not in anonymous.text + forged.text + wrong_role.text
    assert response.status_code == 200
    text = response.text
    assert "# TYPE cdrwatch_campaign_calls_total counter" in text
    assert (
        'cdrwatch_campaign_calls_total{campaign="_other",outcome="abandoned",tenant="default"} 1.0'
        in text
    )
    assert (
        'cdrwatch_alerts_firing{rule="it.silent_rate.cumulative",severity="violation",'
        'tenant="default"} 1.0' in text
    )
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_a_tenant_bound_token_scrapes_its_tenant_series_only(tmp_path):
    settings = ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
    )
    app = create_app(settings, consumer_enabled=False, clock=lambda: NOW)
    async with app.router.lifespan_context(app):
        counts = dict.fromkeys(COUNT_FIELDS, 0)
        counts.update(attempts=10, answered_by_person=5, silent=1)
        stats = stats_from_counts("shared-name", T0, T0 + timedelta(minutes=30), counts)
        alert_b = firing("b-only", "it.silent_rate.cumulative", "violation")
        await apply_messages(
            app.state.store,
            [
                stats_message(stats, "cumulative", profile="it", tenant_id="tenant-a"),
                stats_message(stats, "cumulative", profile="it", tenant_id="tenant-b"),
                window("b-secret", attempts=3),
                alert_b,
            ],
        )
        bound = await app.state.tokens.create("viewer", "tenant-a")
        unbound = await app.state.tokens.create("viewer")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            scoped = (
                await client.get("/metrics", headers={"Authorization": f"Bearer {bound}"})
            ).text
            everything = (
                await client.get("/metrics", headers={"Authorization": f"Bearer {unbound}"})
            ).text
    series = [line for line in scoped.splitlines() if line and not line.startswith("#")]
    assert series, scoped
    assert all('tenant="tenant-a"' in line for line in series), series
    assert "b-secret" not in scoped and "b-only" not in scoped
    assert 'tenant="tenant-b"' in everything and "b-secret" in everything


# -- caps, verdicts and headroom of the profile's rules (issue 8 item 7) ---------------------


def rule_labels(campaign: str, rule: str, metric: str, window: str, **extra: str):
    kind = "early_warning" if window in ("15m", "1h", "24h") else "regulatory"
    return {
        "tenant": "default",
        "campaign": campaign,
        "profile": extra.get("profile", "it"),
        "rule": rule,
        "metric": metric,
        "window": window,
        "kind": kind,
    }


def rule_series(metrics: ApiMetrics, name: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["campaign"], s.labels["rule"], s.labels["window"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


async def configure(store, campaign: str, profile: str | None, **overrides) -> None:
    config = CampaignConfig(
        campaign_id=campaign,
        profile=profile,
        overrides=overrides,
        tenant_id="default",
        updated_at=NOW,
    )

    async def publish(_config: CampaignConfig) -> None:
        return None

    await store.put_campaign(campaign, lambda _current: config, publish)


async def test_a_one_call_campaign_at_rate_1_is_insufficient_with_headroom_before_certain(store):
    """The finding: 1 silent of 1 answered paged at 100 % > 3 %; the detector says
    "insufficient" (below the 100-call sample) and 2 more silent calls are still allowed."""
    await apply_messages(store, [window("tiny", attempts=1, answered_by_person=1, silent=1)])
    metrics = metrics_for()
    await metrics.refresh(store)
    value = metrics.registry.get_sample_value
    labels = rule_labels("tiny", "it-silent-rate-cumulative", "silent", "cumulative")
    assert (
        value(
            "cdrwatch_campaign_rate",
            {k: labels[k] for k in ("tenant", "campaign")}
            | {"profile": "it", "metric": "silent", "window": "cumulative"},
        )
        == 1.0
    )
    assert value("cdrwatch_campaign_cap", labels) == 0.03
    assert value("cdrwatch_campaign_verdict", labels) == 0  # insufficient
    assert value("cdrwatch_campaign_headroom", labels) == 2


@pytest.mark.parametrize(
    ("silent", "live", "verdict", "room"),
    [
        pytest.param(3, 99, 0, 0, id="garante-2014-3-of-99-insufficient-a-4th-is-certain"),
        pytest.param(4, 99, 3, 0, id="garante-2014-4-of-99-certain-violation"),
        pytest.param(2, 100, 1, 1, id="garante-2014-2-of-100-ok"),
        pytest.param(3, 100, 2, 0, id="garante-2014-3-of-100-warning-at-cap"),
        pytest.param(4, 100, 3, 0, id="garante-2014-4-of-100-violation"),
    ],
)
async def test_verdict_codes_follow_the_detector_assessment(store, silent, live, verdict, room):
    await apply_messages(
        store, [window("c", attempts=live, answered_by_person=live, silent=silent)]
    )
    metrics = metrics_for()
    await metrics.refresh(store)
    labels = rule_labels("c", "it-silent-rate-cumulative", "silent", "cumulative")
    assert metrics.registry.get_sample_value("cdrwatch_campaign_verdict", labels) == verdict
    assert metrics.registry.get_sample_value("cdrwatch_campaign_headroom", labels) == room


async def test_only_the_rules_of_the_campaigns_profile_have_series(store):
    """An Italian campaign has no abandoned-rate rule: no abandoned verdict, whatever its
    abandoned rate; a UK campaign's sliding 24 h is judged on the live 24 h window."""
    await apply_messages(
        store,
        [
            window("it-1", attempts=200, answered_by_person=200, abandoned=50, silent=1),
            window("it-1", "15m", attempts=200, answered_by_person=200, abandoned=50, silent=1),
            window("uk-1", profile="uk", attempts=200, answered_by_person=200, abandoned=50),
            window("uk-1", "24h", profile="uk", attempts=150, answered_by_person=150, abandoned=4),
        ],
    )
    metrics = metrics_for()
    await metrics.refresh(store)
    verdicts = rule_series(metrics, "cdrwatch_campaign_verdict")
    assert verdicts == {
        ("it-1", "it-silent-rate-cumulative", "cumulative"): 1,
        ("it-1", "it-silent-rate-15m", "15m"): 1,
        # 4 of 150 = 2.67 %: warning on the UK "any 24 h" and its 24 h early warning
        ("uk-1", "uk-abandoned-rate-sliding-24h", "sliding_24h"): 2,
        ("uk-1", "uk-abandoned-rate-24h", "24h"): 2,
        # the current London day, summed from minute buckets: none were stored here
        ("uk-1", "uk-abandoned-rate-calendar-day", "calendar_day"): 0,
    }
    assert rule_series(metrics, "cdrwatch_campaign_cap") == dict.fromkeys(verdicts, 0.03)
    early = rule_labels("it-1", "it-silent-rate-15m", "silent", "15m")
    assert early["kind"] == "early_warning"
    assert metrics.registry.get_sample_value("cdrwatch_campaign_verdict", early) == 1


async def test_caps_come_from_overrides_and_the_default_profile_setting(store):
    await configure(store, "lenient", "it", silent_rate_max="5/100")
    await apply_messages(
        store,
        [
            window("lenient", attempts=100, answered_by_person=100, silent=4),
            window("plain", profile=None, attempts=100, answered_by_person=100, abandoned=4),
        ],
    )
    metrics = ApiMetrics(
        CollectorRegistry(), campaign_cap=10, clock=lambda: NOW, default_profile="us"
    )
    await metrics.refresh(store)
    value = metrics.registry.get_sample_value
    lenient = rule_labels("lenient", "it-silent-rate-cumulative", "silent", "cumulative")
    assert value("cdrwatch_campaign_cap", lenient) == 0.05
    assert value("cdrwatch_campaign_verdict", lenient) == 2  # 4 % >= 80 % of 5 %
    # "plain" has no profile: the default (us) applies, with its 30-day rule (its early
    # warnings would be on the 15m/1h/24h windows, which were not published).
    assert rule_series(metrics, "cdrwatch_campaign_verdict").keys() == {
        ("lenient", "it-silent-rate-cumulative", "cumulative"),
        ("plain", "us-abandoned-rate-period-30d", "period_30d"),
    }


async def test_folded_campaigns_report_the_worst_verdict_and_least_headroom(store):
    for campaign, silent in (("a", 1), ("b", 0), ("c", 5)):
        await apply_messages(
            store, [window(campaign, attempts=100, answered_by_person=100, silent=silent)]
        )
    metrics = metrics_for(cap=1)
    await metrics.refresh(store)
    verdicts = rule_series(metrics, "cdrwatch_campaign_verdict")
    rooms = rule_series(metrics, "cdrwatch_campaign_headroom")
    key = ("_other", "it-silent-rate-cumulative", "cumulative")
    assert (verdicts[key], rooms[key]) == (3, 0)  # c: 5 of 100 is a violation
    assert verdicts[("a", "it-silent-rate-cumulative", "cumulative")] == 1


async def test_last_cdr_time_is_the_newest_minute_of_the_campaign(store):
    await apply_messages(store, [window("c1", attempts=3), window("c1", "15m", attempts=1)])
    metrics = metrics_for()
    await metrics.refresh(store)
    # window() spans [T0, T0 + 30 min): the newest call is in the minute starting T0 + 29 min.
    assert (
        metrics.registry.get_sample_value(
            "cdrwatch_campaign_last_cdr_timestamp_seconds", {"tenant": "default", "campaign": "c1"}
        )
        == (T0 + timedelta(minutes=29)).timestamp()
    )


def bucket(campaign: str, start: datetime, profile: str, **values: int):
    counts = {field: values.get(field, 0) for field in COUNT_FIELDS}
    stats = stats_from_counts(campaign, start, start + timedelta(minutes=1), counts)
    return stats_message(stats, "minute", profile=profile)


def cumulative(campaign: str, first: datetime, newest: datetime, profile: str, **values: int):
    counts = {field: values.get(field, 0) for field in COUNT_FIELDS}
    stats = stats_from_counts(campaign, first, newest + timedelta(minutes=1), counts)
    return stats_message(stats, "cumulative", profile=profile)


async def test_calendar_day_and_30_day_rules_are_judged_on_the_current_window(store):
    """UK: the London day holding the newest call (4 of 100 yesterday is a violation of
    that day, not of today); US: the 30-day period holding it, from the first minute."""
    day1 = datetime(2026, 1, 14, 10, 0, tzinfo=UTC)  # winter: London = UTC
    day2 = day1 + timedelta(days=1)
    late = day1 + timedelta(days=31)
    await apply_messages(
        store,
        [
            bucket("uk-1", day1, "uk", attempts=100, answered_by_person=100, abandoned=4),
            bucket("uk-1", day2, "uk", attempts=100, answered_by_person=100, abandoned=2),
            cumulative("uk-1", day1, day2, "uk", attempts=200, answered_by_person=200, abandoned=6),
            bucket("us-1", day1, "us", attempts=100, answered_by_person=100, abandoned=5),
            bucket("us-1", late, "us", attempts=50, answered_by_person=50, abandoned=1),
            cumulative("us-1", day1, late, "us", attempts=150, answered_by_person=150, abandoned=6),
        ],
    )
    metrics = metrics_for()
    await metrics.refresh(store)
    verdicts = rule_series(metrics, "cdrwatch_campaign_verdict")
    rooms = rule_series(metrics, "cdrwatch_campaign_headroom")
    uk_day = ("uk-1", "uk-abandoned-rate-calendar-day", "calendar_day")
    us_period = ("us-1", "us-abandoned-rate-period-30d", "period_30d")
    assert (verdicts[uk_day], rooms[uk_day]) == (1, 1)  # 2 of 100 today: ok, 1 more
    assert (verdicts[us_period], rooms[us_period]) == (0, 2)  # 1 of 50: 2 before certain

    # More calls today: the cumulative figures change, so the day is summed again.
    await apply_messages(
        store,
        [
            bucket("uk-1", day2 + timedelta(minutes=1), "uk", answered_by_person=1, abandoned=1),
            cumulative(
                "uk-1",
                day1,
                day2 + timedelta(minutes=1),
                "uk",
                attempts=200,
                answered_by_person=201,
                abandoned=7,
            ),
        ],
    )
    await metrics.refresh(store)
    assert rule_series(metrics, "cdrwatch_campaign_verdict")[uk_day] == 2  # 3 of 101


def head(campaign: str, minute: datetime, boundary: datetime, profile: str, **values: int):
    counts = {field: values.get(field, 0) for field in COUNT_FIELDS}
    stats = stats_from_counts(campaign, minute, boundary, counts)
    return stats_message(stats, "minute-head", profile=profile)


async def test_the_current_us_period_starts_at_the_exact_first_call(store):
    """The first call at 10:00:20, so period 1 starts at 10:00:20 thirty days later, inside
    a minute whose head (the calls before 10:00:20: 50, 5 abandoned) belongs to period 0.
    Period 1 holds the other 50 of that minute and the 50 of the next: 1 of 100 abandoned,
    ok with 2 to spare (the whole minute would make it 6 of 150, a violation)."""
    first = datetime(2026, 1, 14, 10, 0, tzinfo=UTC)
    split = first + timedelta(days=30)
    await apply_messages(
        store,
        [
            bucket("us-2", first, "us", attempts=1, answered_by_person=1),
            head("us-2", first, first + timedelta(seconds=20), "us"),
            bucket("us-2", split, "us", attempts=100, answered_by_person=100, abandoned=6),
            head(
                "us-2",
                split,
                split + timedelta(seconds=20),
                "us",
                attempts=50,
                answered_by_person=50,
                abandoned=5,
            ),
            bucket("us-2", split + timedelta(minutes=1), "us", attempts=50, answered_by_person=50),
            cumulative(
                "us-2",
                first,
                split + timedelta(minutes=1),
                "us",
                attempts=151,
                answered_by_person=151,
                abandoned=6,
            ),
        ],
    )
    metrics = metrics_for()
    await metrics.refresh(store)
    us_period = ("us-2", "us-abandoned-rate-period-30d", "period_30d")
    verdicts = rule_series(metrics, "cdrwatch_campaign_verdict")
    rooms = rule_series(metrics, "cdrwatch_campaign_headroom")
    assert (verdicts[us_period], rooms[us_period]) == (1, 2)
    [period] = [w for w in metrics.current if w.window == "period_30d"]
    assert (period.start, period.end) == (
        split + timedelta(seconds=20),
        split + timedelta(days=30, seconds=20),
    )
