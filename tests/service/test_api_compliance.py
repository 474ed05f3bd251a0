"""GET /v1/campaigns/{id}/compliance in process: temp SQLite fed with minute buckets as the
detector publishes them, campaigns configured through PUT (fake publisher, real profiles)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from schemas import topics
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.app import create_app
from services.api.consumer import Message, apply_messages, stats_message
from services.api.models import CampaignConfig
from services.api.publisher import campaign_record
from services.common.settings import ApiSettings, DetectorSettings
from services.detector.core.profiles import load_profile

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def reference(profile: str, rule_id: str) -> str:
    [rule] = [r for r in load_profile(profile).rate_rules if r.id == rule_id]
    return rule.reference


class FakePublisher:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def publish(self, config: CampaignConfig) -> None:
        self.records.append(campaign_record(config))


class Api:
    def __init__(self, app, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    async def token(self, role: str, tenant: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.app.state.tokens.create(role, tenant)}"}

    async def feed(self, *messages) -> None:
        await apply_messages(self.app.state.store, list(messages))

    async def configure(self, campaign: str, body: dict) -> None:
        response = await self.client.put(
            f"/v1/campaigns/{campaign}", json=body, headers=await self.token("admin")
        )
        assert response.status_code == 200, response.text

    async def compliance(self, campaign: str, **params: str) -> dict:
        response = await self.client.get(
            f"/v1/campaigns/{campaign}/compliance",
            params=params,
            headers=await self.token("viewer"),
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def api(tmp_path):
    settings = ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
    )
    app = create_app(
        settings, consumer_enabled=False, clock=lambda: NOW, campaign_publisher=FakePublisher()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client)


def minute(
    campaign: str,
    start: datetime,
    *,
    live: int,
    silent: int = 0,
    abandoned: int = 0,
    amd_machine: int = 0,
    tenant: str | None = None,
    profile: str | None = None,
):
    """The detector's record of one minute bucket: `live` answered-by-person calls."""
    counts = dict.fromkeys(COUNT_FIELDS, 0) | {
        "attempts": live + amd_machine,
        "answered": live + amd_machine,
        "answered_by_person": live,
        "amd_machine": amd_machine,
        "silent": silent,
        "abandoned": abandoned,
    }
    stats = stats_from_counts(campaign, start, start + MINUTE, counts)
    return stats_message(stats, "minute", tenant_id=tenant, profile=profile)


# --- it: cumulative ----------------------------------------------------------------------


async def test_it_campaign_cumulative_window_by_hand(api):
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    # No profile configured nor reported: the default profile, it.
    await api.feed(
        minute("it-1", t0, live=120, silent=2),
        minute("it-1", t0 + MINUTE, live=50, silent=1),
        minute("it-1", t0 + DAY + 5 * MINUTE, live=30, silent=1),
    )
    # 4 silent of 200 answered by a person: 2 % (ok, below 2.4 %); (4 + k) / (200 + k)
    # stays within 3 % for k <= 2 (6/202 ok, 7/203 > 3 %).
    assert await api.compliance("it-1") == {
        "campaign_id": "it-1",
        "tenant_id": "default",
        "profile": "it",
        "windows": [
            {
                "rule": "it-silent-rate-cumulative",
                "window": "cumulative",
                "start": "2026-03-02T10:00:00Z",
                "end": "2026-03-03T10:06:00Z",
                "numerator": 4,
                "denominator": 200,
                "value": 0.02,
                "cap": 0.03,
                "verdict": "ok",
                "headroom": 2,
                "reason": "ok: 4 silent calls of 200 answered-by-person calls = 2 %, below the "
                "warning level 2.4 %",
                "reference": reference("it", "it-silent-rate-cumulative"),
            }
        ],
    }
    await api.feed(minute("it-1", t0 + 2 * DAY, live=5, silent=4))
    [window] = (await api.compliance("it-1"))["windows"]
    assert (window["numerator"], window["denominator"], window["value"]) == (8, 205, 8 / 205)
    assert (window["verdict"], window["headroom"], window["end"]) == (
        "violation",
        0,
        "2026-03-04T10:01:00Z",
    )


async def test_it_daily_override_adds_rome_days(api):
    await api.configure("it-2", {"profile": "it", "overrides": {"daily_rule_enabled": True}})
    await api.feed(
        minute("it-2", datetime(2026, 12, 31, 22, 59, tzinfo=UTC), live=100, silent=5),
        minute("it-2", datetime(2026, 12, 31, 23, 0, tzinfo=UTC), live=100, silent=1),
    )
    body = await api.compliance("it-2")
    assert [
        (w["window"], w["start"], w["end"], w["numerator"], w["cap"], w["verdict"])
        for w in body["windows"]
    ] == [
        ("cumulative", "2026-12-31T22:59:00Z", "2026-12-31T23:01:00Z", 6, 0.03, "warning"),
        ("daily", "2026-12-30T23:00:00Z", "2026-12-31T23:00:00Z", 5, 0.04, "violation"),
        ("daily", "2026-12-31T23:00:00Z", "2027-01-01T23:00:00Z", 1, 0.04, "ok"),
    ]


# --- uk: calendar days and the worst 24 h ------------------------------------------------


async def test_uk_campaign_calendar_days_and_a_midnight_spanning_breach(api):
    await api.configure("uk-1", {"profile": "uk"})
    d1 = datetime(2026, 1, 14, tzinfo=UTC)  # winter: London = UTC
    await api.feed(
        minute("uk-1", d1 + timedelta(hours=8), live=100, profile="uk"),
        minute("uk-1", d1 + timedelta(hours=23), live=50, abandoned=4, profile="uk"),
        minute("uk-1", d1 + timedelta(hours=25), live=50, abandoned=4, profile="uk"),
        minute("uk-1", d1 + timedelta(hours=44), live=100, profile="uk"),
    )
    day = reference("uk", "uk-abandoned-rate-calendar-day")
    sliding = reference("uk", "uk-abandoned-rate-sliding-24h")
    # Each day: 4 of 150 = 2.67 %, a warning; (4 + k) / (150 + k) <= 3 % has no k >= 1.
    # The 24 h from 08:01 on 14 Jan hold 23:00 and 01:00 only: 8 of 100, a violation.
    assert await api.compliance("uk-1") == {
        "campaign_id": "uk-1",
        "tenant_id": "default",
        "profile": "uk",
        "windows": [
            {
                "rule": "uk-abandoned-rate-calendar-day",
                "window": "calendar_day",
                "start": "2026-01-14T00:00:00Z",
                "end": "2026-01-15T00:00:00Z",
                "numerator": 4,
                "denominator": 150,
                "value": 4 / 150,
                "cap": 0.03,
                "verdict": "warning",
                "headroom": 0,
                "reason": "warning: 4 abandoned calls of 150 answered-by-person calls = 2.67 %, "
                "at or above the warning level 2.4 % (80 % of the 3 % cap)",
                "reference": day,
            },
            {
                "rule": "uk-abandoned-rate-calendar-day",
                "window": "calendar_day",
                "start": "2026-01-15T00:00:00Z",
                "end": "2026-01-16T00:00:00Z",
                "numerator": 4,
                "denominator": 150,
                "value": 4 / 150,
                "cap": 0.03,
                "verdict": "warning",
                "headroom": 0,
                "reason": "warning: 4 abandoned calls of 150 answered-by-person calls = 2.67 %, "
                "at or above the warning level 2.4 % (80 % of the 3 % cap)",
                "reference": day,
            },
            {
                "rule": "uk-abandoned-rate-sliding-24h",
                "window": "sliding_24h",
                "start": "2026-01-14T08:01:00Z",
                "end": "2026-01-15T08:01:00Z",
                "numerator": 8,
                "denominator": 100,
                "value": 0.08,
                "cap": 0.03,
                "verdict": "violation",
                "headroom": 0,
                "reason": "violation: 8 abandoned calls of 100 answered-by-person calls = 8 %, "
                "above the 3 % cap",
                "reference": sliding,
            },
        ],
    }
    # [from, to) = 15 Jan: the first day ends where the range starts and is left out.
    ranged = await api.compliance(
        "uk-1", **{"from": "2026-01-15T00:00:00Z", "to": "2026-01-16T00:00:00Z"}
    )
    assert [(w["window"], w["start"]) for w in ranged["windows"]] == [
        ("calendar_day", "2026-01-15T00:00:00Z"),
        ("sliding_24h", "2026-01-14T08:01:00Z"),
    ]
    later = await api.compliance("uk-1", **{"from": "2026-01-15T08:01:00Z"})
    assert [w["start"] for w in later["windows"]] == ["2026-01-15T00:00:00Z"]


async def test_uk_amd_false_positive_ratio_of_the_campaign_is_added_to_both_terms(api):
    await api.configure(
        "uk-2",
        {
            "profile": "uk",
            "amd_false_positive_ratio": 0.1,
            "overrides": {"sliding_24h_rule_enabled": False},
        },
    )
    # 2 abandoned of 90 live, 100 AMD=machine: estimate 10, so 12 of 100 (Ofcom UK-1a).
    await api.feed(
        minute(
            "uk-2", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), live=90, abandoned=2, amd_machine=100
        )
    )
    [window] = (await api.compliance("uk-2"))["windows"]
    assert (window["start"], window["end"]) == ("2026-10-24T23:00:00Z", "2026-10-26T00:00:00Z")
    assert (window["numerator"], window["denominator"], window["value"]) == (12, 100, 0.12)
    assert window["verdict"] == "violation"


# --- us: successive 30-day periods -------------------------------------------------------


async def test_us_campaign_30_day_periods_from_the_first_call(api):
    await api.configure("us-1", {"profile": "us"})
    first = datetime(2026, 1, 10, 15, 30, tzinfo=UTC)
    await api.feed(
        minute("us-1", first, live=100, abandoned=1),
        minute("us-1", first + 29 * DAY, live=100, abandoned=2),
        minute("us-1", first + 30 * DAY, live=100, abandoned=3),
        minute("us-1", first + 64 * DAY, live=100, abandoned=4),
    )
    body = await api.compliance("us-1")
    assert body["profile"] == "us"
    # 3 of 200 = 1.5 % ok, (3 + k) / (200 + k) <= 3 % for k <= 3; 3 of 100 at the cap is a
    # warning; 4 of 100 a violation.
    assert [
        (w["start"], w["end"], w["numerator"], w["denominator"], w["verdict"], w["headroom"])
        for w in body["windows"]
    ] == [
        ("2026-01-10T15:30:00Z", "2026-02-09T15:30:00Z", 3, 200, "ok", 3),
        ("2026-02-09T15:30:00Z", "2026-03-11T15:30:00Z", 3, 100, "warning", 0),
        ("2026-03-11T15:30:00Z", "2026-04-10T15:30:00Z", 4, 100, "violation", 0),
    ]
    assert {w["rule"] for w in body["windows"]} == {"us-abandoned-rate-period-30d"}
    assert body["windows"][0]["reference"] == reference("us", "us-abandoned-rate-period-30d")
    # A backfilled earlier call re-anchors every period.
    await api.feed(minute("us-1", first - 5 * DAY, live=10))
    starts = [w["start"] for w in (await api.compliance("us-1"))["windows"]]
    assert starts == ["2026-01-05T15:30:00Z", "2026-02-04T15:30:00Z", "2026-03-06T15:30:00Z"]


async def test_profile_without_rate_rules_has_no_windows(api):
    await api.configure("fr-1", {"profile": "fr"})
    await api.feed(minute("fr-1", NOW, live=100, abandoned=50))
    assert await api.compliance("fr-1") == {
        "campaign_id": "fr-1",
        "tenant_id": "default",
        "profile": "fr",
        "windows": [],
    }


async def test_a_known_campaign_without_buckets_has_no_windows(api):
    await api.configure("it-empty", {"profile": "it"})
    assert (await api.compliance("it-empty"))["windows"] == []


# --- errors and auth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-01-15T00:00:30Z"}, "from"),
        ({"to": "2026-01-15T00:00:00.5Z"}, "to"),
        ({"from": "2026-01-16T00:00:00Z", "to": "2026-01-15T00:00:00Z"}, "from"),
        ({"from": "2026-01-15T00:00:00"}, "from"),
    ],
)
async def test_a_bad_range_is_422(api, params, field):
    await api.feed(minute("c1", NOW, live=1))
    response = await api.client.get(
        "/v1/campaigns/c1/compliance", params=params, headers=await api.token("viewer")
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["query", field]


async def test_unknown_campaign_and_other_tenants_campaign_are_404(api):
    await api.feed(minute("acme-1", NOW, live=1, tenant="acme"))
    globex = await api.token("viewer", "globex")
    for path in ("/v1/campaigns/nope/compliance", "/v1/campaigns/acme-1/compliance"):
        response = await api.client.get(path, headers=globex)
        assert response.status_code == 404
        assert "acme" not in response.text
    own = await api.client.get(
        "/v1/campaigns/acme-1/compliance", headers=await api.token("viewer", "acme")
    )
    assert own.status_code == 200
    assert own.json()["campaign_id"] == "acme-1"


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("bogus", 401), ("ingest", 403), ("viewer", 200), ("compliance", 200)],
)
async def test_compliance_needs_a_viewer_token(api, role, status):
    await api.feed(minute("secret", NOW, live=100, silent=50))
    if role is None:
        headers = {}
    elif role == "bogus":
        headers = {"Authorization": "Bearer not-a-token"}
    else:
        headers = await api.token(role)
    response = await api.client.get("/v1/campaigns/secret/compliance", headers=headers)
    assert response.status_code == status
    if status != 200:
        assert "windows" not in response.text


@pytest.mark.parametrize(
    ("days", "refused"),
    [
        pytest.param(729, True, id="garante-2014-729-days-refused"),
        pytest.param(730, False, id="garante-2014-730-days-ok"),
    ],
)
def test_a_retention_shorter_than_the_it_profile_requires_is_refused_at_start(
    tmp_path, days: int, refused: bool
) -> None:
    """Garante 2014: keep the per-campaign statistical reports at least two years."""
    settings = ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
        alert_retention_days=days,
    )
    if refused:
        with pytest.raises(ValueError, match="730 days profile 'it' requires") as info:
            create_app(settings, consumer_enabled=False, campaign_publisher=FakePublisher())
        assert "CDRWATCH_ALERT_RETENTION_DAYS" in str(info.value)
    else:
        app = create_app(settings, consumer_enabled=False, campaign_publisher=FakePublisher())
        assert app.state.settings.alert_retention_days == 730


async def test_the_default_profile_setting_applies_to_a_campaign_without_one(
    tmp_path, monkeypatch
) -> None:
    """CDRWATCH_DEFAULT_PROFILE, the detector's setting, is the api's too (issue 8 item 8):
    a campaign neither configured nor reported is judged on it, not on `it`."""
    monkeypatch.setenv("CDRWATCH_DEFAULT_PROFILE", "uk")
    settings = ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
    )
    assert settings.default_profile == "uk"
    app = create_app(
        settings, consumer_enabled=False, clock=lambda: NOW, campaign_publisher=FakePublisher()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            api = Api(app, client)
            await api.feed(minute("plain", NOW, live=100, abandoned=4))
            body = await api.compliance("plain")
    assert body["profile"] == "uk"
    assert [(w["rule"], w["verdict"]) for w in body["windows"]] == [
        ("uk-abandoned-rate-calendar-day", "violation"),
        ("uk-abandoned-rate-sliding-24h", "violation"),
    ]


def test_an_unknown_default_profile_is_refused_at_start(tmp_path) -> None:
    settings = ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
        default_profile="xx",
    )
    with pytest.raises(ValueError, match="CDRWATCH_DEFAULT_PROFILE: unknown profile 'xx'"):
        create_app(settings, consumer_enabled=False, campaign_publisher=FakePublisher())


async def test_an_insufficient_window_shows_the_calls_left_before_the_certain_violation(api):
    """Issue 8: `headroom: 0` on an "insufficient" window read as "no room left". 1 silent
    of 1 answered (rate 100 %, below the 100-call sample): 2 more, a 4th is certain."""
    await api.feed(minute("tiny", NOW, live=1, silent=1))
    [window] = (await api.compliance("tiny"))["windows"]
    assert (window["verdict"], window["value"], window["headroom"]) == ("insufficient", 1, 2)
    assert window["reason"].startswith("insufficient: 1 answered-by-person calls")
    await api.feed(minute("tiny", NOW + MINUTE, live=2, silent=2))
    [window] = (await api.compliance("tiny"))["windows"]
    assert (window["verdict"], window["numerator"], window["headroom"]) == ("insufficient", 3, 0)
    await api.feed(minute("tiny", NOW + 2 * MINUTE, live=1, silent=1))
    [window] = (await api.compliance("tiny"))["windows"]
    assert (window["verdict"], window["numerator"], window["headroom"]) == ("violation", 4, 0)


class _Sent:
    """A detector output topic's `send_soon`, kept as the api's consumer reads it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send_soon(self, *, key, value, headers=None, partition=None) -> None:  # noqa: ARG002
        self.messages.append(Message(topics.STATS, key, value, list(headers or ())))


async def test_us_periods_from_the_detector_are_exact_at_a_boundary_inside_a_minute(api, tmp_path):
    """Issue 7 item 7, detector to api: the first call at 15:30:20.25, so the 30-day
    boundary falls inside minute 15:30 of 9 February. The real detector adapter counts
    calls crowding that boundary and publishes the minute buckets with their heads; the
    compliance view, fed those very messages, puts each call in the period of its exact
    instant, as the detector's own alerts do."""
    from types import SimpleNamespace

    import orjson

    from services.detector.app import Detector, TableState
    from services.detector.core.engine import Engine

    anchor = datetime(2026, 1, 10, 15, 30, 20, 250_000, tzinfo=UTC)
    boundary = anchor + 30 * DAY
    offsets = [0.0, 5.0, *(30 * 86400 - 25 + 2.5 * i for i in range(20))]
    late = {2, 4, 6, 13, 15, 17, 19}  # agent after 4 s: abandoned (3 before the boundary)
    records = []
    for n, seconds in enumerate(offsets):
        at = anchor + timedelta(seconds=seconds)
        answered = at + timedelta(seconds=5)
        records.append(
            {
                "call_id": f"call-{n}",
                "campaign_id": "us-x",
                "originated_at": at.isoformat(),
                "answered_at": answered.isoformat(),
                "agent_connected_at": (
                    answered + timedelta(seconds=4 if n in late else 1)
                ).isoformat(),
                "ended_at": (at + timedelta(seconds=90)).isoformat(),
                "callee_key": f"k{n:015d}",
                "callee_zones": ["America/New_York"],
                "accepted_at": (at + timedelta(seconds=91)).isoformat(),
            }
        )
    before = [r for r in records if datetime.fromisoformat(r["originated_at"]) < boundary]
    assert len(before) == 2 + 10  # two at the start, ten in the last 25 s before it

    settings = DetectorSettings(
        data_dir=tmp_path / "detector", callee_store="memory://", default_profile="us"
    )
    detector = Detector(settings, clock=lambda: boundary + DAY)
    detector.table = {}
    detector.state = TableState(detector.table)
    detector.engine = Engine(
        detector.state, detector.configs.config_for, lateness=7 * DAY, clock=detector.clock
    )
    sent = _Sent()
    detector.stats = sent
    for name in ("alerts", "dlq", "callee_topic", "violation_topic", "traces"):
        setattr(detector, name, SimpleNamespace(send_soon=lambda **_kw: None))

    class Event:  # what the adapter reads of a faust event (weak-referenceable like it)
        def __init__(self, value: bytes, offset: int) -> None:
            self.value, self.key = value, b"us-x"
            self.message = SimpleNamespace(
                topic=topics.CDRS, partition=0, offset=offset, headers=[]
            )

    await detector.handle([Event(orjson.dumps(r), i) for i, r in enumerate(records)])
    windows = {dict(m.headers)[topics.HEADER_WINDOW] for m in sent.messages}
    assert {b"minute", b"minute-head"} <= windows

    await api.configure("us-x", {"profile": "us"})
    await api.feed(*sent.messages)
    body = await api.compliance("us-x")
    assert [(w["start"], w["end"], w["numerator"], w["denominator"]) for w in body["windows"]] == [
        ("2026-01-10T15:30:20.250000Z", "2026-02-09T15:30:20.250000Z", 3, 12),
        ("2026-02-09T15:30:20.250000Z", "2026-03-11T15:30:20.250000Z", 4, 10),
    ]
