"""The api over HTTP, in process: temp SQLite, no broker (consumer off, fake publisher)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from schemas.alert_v1 import AlertV1
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.app import create_app
from services.api.campaigns import CampaignConfigError, DetectorProfiles
from services.api.consumer import alert_message, apply_messages, stats_message
from services.api.models import CampaignConfig
from services.api.publisher import PublishUnavailable, campaign_record
from services.common.settings import ApiSettings

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
NOW = datetime(2026, 3, 3, 9, 30, 15, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakePublisher:
    """Records what PUT publishes; `down` makes it behave like an unreachable broker."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.down = False

    async def publish(self, config: CampaignConfig) -> None:
        if self.down:
            raise PublishUnavailable("broker down")
        self.records.append(campaign_record(config))


class FakeProfiles:
    """Profiles `it` and `uk`; `it` takes the override silent_rate_max in [0, 1]."""

    def validate(self, profile: str, overrides: Mapping[str, Any]) -> None:
        if profile not in ("it", "uk"):
            raise CampaignConfigError("profile", f"unknown profile {profile!r}; available: it, uk")
        for key, value in overrides.items():
            if profile != "it" or key != "silent_rate_max":
                raise CampaignConfigError("overrides", f"unknown parameter {key!r} for {profile}")
            if not 0 <= value <= 1:
                raise CampaignConfigError("overrides", f"{key} must be within [0, 1]")


class Api:
    def __init__(self, app, client: httpx.AsyncClient, publisher: FakePublisher, clock) -> None:
        self.app = app
        self.client = client
        self.publisher = publisher
        self.clock = clock
        self.store = app.state.store

    async def token(self, role: str, tenant: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.app.state.tokens.create(role, tenant)}"}

    async def feed(self, *messages) -> None:
        await apply_messages(
            self.store, [alert_message(m) if isinstance(m, AlertV1) else m for m in messages]
        )


def settings_for(tmp_path, **overrides) -> ApiSettings:
    return ApiSettings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        serve_ingest=False,
        **overrides,
    )


@pytest.fixture
async def api(tmp_path):
    publisher = FakePublisher()
    clock = FakeClock(NOW)
    app = create_app(
        settings_for(tmp_path),
        consumer_enabled=False,
        clock=clock,
        campaign_publisher=publisher,
        profiles=FakeProfiles(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, publisher, clock)


def minute(campaign: str, start: datetime, tenant: str | None = None, **values: int):
    counts = {name: values.get(name, 0) for name in COUNT_FIELDS}
    stats = stats_from_counts(campaign, start, start + MINUTE, counts)
    return stats_message(stats, "minute", tenant_id=tenant, profile="it")


def alert(campaign: str, rule: str = "it.silent_rate.cumulative", **fields) -> AlertV1:
    body = {
        "id": f"{rule}:{campaign}",
        "rule": rule,
        "profile": "it",
        "campaign_id": campaign,
        "severity": "violation",
        "state": "firing",
        "value": 0.04,
        "threshold": 0.03,
        "numerator": 4,
        "denominator": 100,
        "window": {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"},
        "opened_at": "2026-03-02T10:30:00Z",
    }
    return AlertV1.model_validate(body | fields)


# --- stats -----------------------------------------------------------------------------


async def test_stats_for_a_hand_computed_range(api):
    await api.feed(
        minute("c1", T0, attempts=10, answered=9, answered_by_person=8, silent=1, amd_machine=1),
        minute("c1", T0 + MINUTE, attempts=6, answered=4, answered_by_person=4, abandoned=1),
        minute("c1", T0 + 2 * MINUTE, attempts=4, out_of_hours=2, short_ring=1),
    )
    viewer = await api.token("viewer")
    response = await api.client.get(
        "/v1/campaigns/c1/stats",
        params={"from": "2026-03-02T11:00:00+01:00", "to": "2026-03-02T10:02:00Z"},
        headers=viewer,
    )
    assert response.status_code == 200
    assert response.json() == {
        "campaign_id": "c1",
        "tenant_id": "default",
        "from": "2026-03-02T10:00:00Z",
        "to": "2026-03-02T10:02:00Z",
        "attempts": 16,
        "answered": 13,
        "answered_by_person": 12,
        "amd_machine": 1,
        "silent": 1,
        "abandoned": 1,
        "out_of_hours": 0,
        "short_ring": 0,
        "silent_rate": 1 / 12,
        "abandoned_rate": 1 / 12,
        "out_of_hours_rate": 0.0,
    }


async def test_stats_default_to_the_last_24_hours_up_to_the_current_minute(api):
    # NOW is 09:30:15 on 3 March: the default range is [09:31 on 2 March, 09:31 on 3 March).
    end = datetime(2026, 3, 3, 9, 31, tzinfo=UTC)
    await api.feed(
        minute("c1", end - 24 * 60 * MINUTE - MINUTE, attempts=100),  # just before
        minute("c1", end - 24 * 60 * MINUTE, attempts=1),  # first minute in
        minute("c1", end - MINUTE, attempts=2),  # the current minute
        minute("c1", end, attempts=1000),  # the future
    )
    response = await api.client.get("/v1/campaigns/c1/stats", headers=await api.token("viewer"))
    body = response.json()
    assert (body["from"], body["to"]) == ("2026-03-02T09:31:00Z", "2026-03-03T09:31:00Z")
    assert body["attempts"] == 3
    assert (body["silent_rate"], body["abandoned_rate"]) == (None, None)
    assert body["out_of_hours_rate"] == 0.0


async def test_stats_rates_are_null_on_zero_denominators(api):
    await api.feed(minute("c1", T0, silent=0))
    response = await api.client.get(
        "/v1/campaigns/c1/stats",
        params={"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:01:00Z"},
        headers=await api.token("viewer"),
    )
    body = response.json()
    assert body["attempts"] == 0
    assert body["silent_rate"] is None
    assert body["abandoned_rate"] is None
    assert body["out_of_hours_rate"] is None


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "2026-03-02T10:00:30Z", "to": "2026-03-02T11:00:00Z"}, "from", "minute"),
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T11:00:00.5Z"}, "to", "minute"),
        ({"from": "2026-03-02T11:00:00Z", "to": "2026-03-02T10:00:00Z"}, "from", "before"),
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:00:00Z"}, "from", "before"),
        ({"from": "2026-03-02T10:00:00"}, "from", "offset"),
        ({"to": "yesterday"}, "to", "RFC 3339"),
    ],
    ids=["from-not-minute", "to-fraction", "inverted", "empty", "no-offset", "not-a-time"],
)
async def test_stats_range_errors_are_422_naming_the_parameter(api, params, field, message):
    await api.feed(minute("c1", T0, attempts=1))
    response = await api.client.get(
        "/v1/campaigns/c1/stats", params=params, headers=await api.token("viewer")
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert message in error["msg"]


async def test_unencoded_plus_in_an_offset_is_understood(api):
    await api.feed(minute("c1", T0, attempts=1))
    response = await api.client.get(
        "/v1/campaigns/c1/stats?from=2026-03-02T11:00:00+01:00&to=2026-03-02T11:01:00+01:00",
        headers=await api.token("viewer"),
    )
    assert response.status_code == 200
    assert response.json()["attempts"] == 1


async def test_unknown_campaign_and_other_tenants_campaign_are_404(api):
    await api.feed(minute("acme-1", T0, tenant="acme", attempts=1))
    globex = await api.token("viewer", "globex")
    for path in ("/v1/campaigns/nope/stats", "/v1/campaigns/acme-1/stats"):
        response = await api.client.get(path, headers=globex)
        assert response.status_code == 404
        assert "acme" not in response.text
    own = await api.client.get(
        "/v1/campaigns/acme-1/stats", headers=await api.token("viewer", "acme")
    )
    assert own.status_code == 200


# --- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("GET", "/v1/campaigns", None, 401),
        ("GET", "/v1/campaigns", "bogus", 401),
        ("GET", "/v1/campaigns", "ingest", 403),
        ("GET", "/v1/campaigns/secret-campaign/stats", "ingest", 403),
        ("GET", "/v1/alerts", None, 401),
        ("GET", "/v1/alerts/it.silent_rate.cumulative:secret-campaign", "ingest", 403),
        ("POST", "/v1/alerts/it.silent_rate.cumulative:secret-campaign/ack", "viewer", 403),
        ("PUT", "/v1/campaigns/secret-campaign", "compliance", 403),
        ("PUT", "/v1/campaigns/secret-campaign", None, 401),
    ],
)
async def test_unauthorised_requests_get_no_data(api, method, path, role, status):
    await api.feed(minute("secret-campaign", T0, attempts=7), alert("secret-campaign"))
    if role is None:
        headers = {}
    elif role == "bogus":
        headers = {"Authorization": "Bearer cdrw_not-a-token"}
    else:
        headers = await api.token(role)
    response = await api.client.request(method, path, headers=headers, json={"note": "x"})
    assert response.status_code == status
    assert list(response.json()) == ["detail"]
    assert "secret-campaign" not in response.text.replace(path, "")
    assert "attempts" not in response.text


# --- campaigns -------------------------------------------------------------------------


async def test_campaign_list_shows_status_profile_and_live_windows(api):
    cumulative = stats_from_counts(
        "c1", T0, T0 + 30 * MINUTE, {"attempts": 300, "answered_by_person": 200, "silent": 8}
    )
    await api.feed(
        minute("c1", T0, tenant="acme", attempts=1),
        stats_message(cumulative, "cumulative", tenant_id="acme", profile="it"),
        alert("c1", tenant_id="acme"),
        minute("c2", T0, attempts=1),
    )
    response = await api.client.get("/v1/campaigns", headers=await api.token("viewer"))
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    c1, c2 = body["items"]
    assert c2["tenant_id"] == "default"
    assert (c1["campaign_id"], c1["tenant_id"], c1["profile"], c1["status"]) == (
        "c1",
        "acme",
        "it",
        "violation",
    )
    assert c1["windows"]["cumulative"]["silent_rate"] == 0.04
    assert c1["windows"]["cumulative"]["from"] == "2026-03-02T10:00:00Z"
    assert (c2["campaign_id"], c2["status"], c2["windows"]) == ("c2", "ok", {})


async def test_campaign_list_pages_and_refuses_foreign_cursors(api):
    await api.feed(*(minute(f"c{i}", T0, attempts=1) for i in range(3)))
    viewer = await api.token("viewer")
    first = (await api.client.get("/v1/campaigns?limit=2", headers=viewer)).json()
    assert [c["campaign_id"] for c in first["items"]] == ["c0", "c1"]
    second = await api.client.get(
        "/v1/campaigns", params={"limit": 2, "cursor": first["next_cursor"]}, headers=viewer
    )
    assert [c["campaign_id"] for c in second.json()["items"]] == ["c2"]
    bad = await api.client.get("/v1/campaigns?cursor=%%%", headers=viewer)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert (await api.client.get("/v1/campaigns?limit=1001", headers=viewer)).status_code == 422


async def test_put_creates_the_campaign_and_publishes_its_configuration(api):
    admin = await api.token("admin")
    body = {
        "profile": "it",
        "overrides": {"silent_rate_max": 0.02},
        "amd_false_positive_ratio": 0.1,
    }
    response = await api.client.put("/v1/campaigns/new-1", json=body, headers=admin)
    assert response.status_code == 200, response.text
    stored = response.json()
    assert (stored["campaign_id"], stored["profile"], stored["overrides"]) == (
        "new-1",
        "it",
        {"silent_rate_max": 0.02},
    )
    assert stored["amd_false_positive_ratio"] == 0.1
    assert stored["configured_at"] == "2026-03-03T09:30:15Z"
    [(key, value)] = api.publisher.records
    assert key == b"default/new-1"
    assert orjson.loads(value) == {
        "campaign_id": "new-1",
        "profile": "it",
        "overrides": {"silent_rate_max": 0.02},
        "amd_false_positive_ratio": 0.1,
        "tenant_id": "default",
        "updated_at": "2026-03-03T09:30:15Z",
    }
    # keys left out keep their value
    again = await api.client.put(
        "/v1/campaigns/new-1", json={"amd_false_positive_ratio": 0.2}, headers=admin
    )
    assert again.json()["overrides"] == {"silent_rate_max": 0.02}
    assert orjson.loads(api.publisher.records[-1][1])["amd_false_positive_ratio"] == 0.2
    listed = await api.client.get("/v1/campaigns", headers=await api.token("viewer"))
    assert [c["campaign_id"] for c in listed.json()["items"]] == ["new-1"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"profile": "xx"}, "profile"),
        ({"profile": "it", "overrides": {"nonsense": 1}}, "overrides"),
        ({"profile": "it", "overrides": {"silent_rate_max": 7}}, "overrides"),
        ({"overrides": {"silent_rate_max": 0.02}}, "overrides"),
        ({"amd_false_positive_ratio": 1.5}, "amd_false_positive_ratio"),
        ({"profile": "it", "colour": "red"}, "colour"),
    ],
    ids=["unknown-profile", "unknown-override", "bad-override", "no-profile", "ratio", "extra"],
)
async def test_put_refuses_bad_configuration_naming_the_key_and_applies_nothing(api, body, field):
    response = await api.client.put("/v1/campaigns/c1", json=body, headers=await api.token("admin"))
    assert response.status_code == 422
    assert field in response.json()["detail"][0]["loc"]
    assert api.publisher.records == []
    assert await api.store.get_campaign("c1") is None


async def test_put_with_the_broker_down_is_503_and_stores_nothing(api):
    api.publisher.down = True
    response = await api.client.put(
        "/v1/campaigns/c1", json={"profile": "it"}, headers=await api.token("admin")
    )
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert await api.store.get_campaign("c1") is None


async def test_tenant_bound_admin_configures_only_its_tenant(api):
    await api.feed(minute("globex-1", T0, tenant="globex", attempts=1))
    acme = await api.token("admin", "acme")
    foreign = await api.client.put(
        "/v1/campaigns/globex-1", params={"tenant": "globex"}, json={"profile": "it"}, headers=acme
    )
    assert foreign.status_code == 404
    steal = await api.client.put("/v1/campaigns/acme-2", json={"tenant_id": "globex"}, headers=acme)
    assert steal.status_code == 403
    own = await api.client.put("/v1/campaigns/acme-2", json={"profile": "uk"}, headers=acme)
    assert own.status_code == 200
    assert own.json()["tenant_id"] == "acme"
    # The same id as globex's campaign is acme's own campaign: globex's stays unconfigured.
    same_id = await api.client.put("/v1/campaigns/globex-1", json={"profile": "uk"}, headers=acme)
    assert (same_id.status_code, same_id.json()["tenant_id"]) == (200, "acme")
    assert (await api.store.get_campaign("globex-1", tenant_id="globex")).configured_at is None
    assert [k for k, _ in api.publisher.records] == [b"acme/acme-2", b"acme/globex-1"]
    # An unbound admin writes the default tenant's, or the tenant it names.
    unbound = await api.token("admin")
    named = await api.client.put(
        "/v1/campaigns/globex-1",
        params={"tenant": "globex"},
        json={"profile": "it"},
        headers=unbound,
    )
    assert (named.status_code, named.json()["tenant_id"]) == (200, "globex")
    plain = await api.client.put("/v1/campaigns/globex-1", json={"profile": "it"}, headers=unbound)
    assert (plain.status_code, plain.json()["tenant_id"]) == (200, "default")


async def test_detector_profiles_validate_against_the_shipped_profiles():
    profiles = DetectorProfiles()
    profiles.validate("it", {})
    with pytest.raises(CampaignConfigError) as unknown:
        profiles.validate("no-such-profile", {})
    assert unknown.value.field == "profile"
    with pytest.raises(CampaignConfigError) as bad:
        profiles.validate("it", {"no_such_parameter": 1})
    assert bad.value.field == "overrides"
    assert "no_such_parameter" in bad.value.message


# --- alerts ----------------------------------------------------------------------------


async def test_alert_list_filters_and_pages_over_http(api):
    await api.feed(
        alert("c1", rule="r1", opened_at="2026-03-02T10:00:00Z"),
        alert("c1", rule="r2", opened_at="2026-03-02T10:05:00Z", severity="warning"),
        alert(
            "c2",
            rule="r1",
            opened_at="2026-03-02T10:10:00Z",
            state="resolved",
            resolved_at="2026-03-02T10:20:00Z",
        ),
    )
    viewer = await api.token("viewer")
    first = (await api.client.get("/v1/alerts?limit=2", headers=viewer)).json()
    assert [a["id"] for a in first["items"]] == ["r1:c2", "r2:c1"]
    rest = await api.client.get(
        "/v1/alerts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=viewer
    )
    assert [a["id"] for a in rest.json()["items"]] == ["r1:c1"]
    assert rest.json()["next_cursor"] is None
    filtered = await api.client.get(
        "/v1/alerts",
        params={"campaign_id": "c1", "state": "firing", "severity": "violation", "rule": "r1"},
        headers=viewer,
    )
    assert [a["id"] for a in filtered.json()["items"]] == ["r1:c1"]
    since = await api.client.get(
        "/v1/alerts", params={"since": "2026-03-02T11:05:00+01:00"}, headers=viewer
    )
    assert [a["id"] for a in since.json()["items"]] == ["r1:c2", "r2:c1"]
    assert (await api.client.get("/v1/alerts?state=open", headers=viewer)).status_code == 422
    assert (await api.client.get("/v1/alerts?since=soon", headers=viewer)).status_code == 422
    # items are exactly Alert v1
    assert set(first["items"][0]) == set(AlertV1.model_fields)


async def test_alert_detail_history_and_ack(api):
    await api.feed(alert("c1", severity="warning"), alert("c1", severity="violation"))
    compliance = await api.token("compliance")
    token = compliance["Authorization"].removeprefix("Bearer ")
    path = "/v1/alerts/it.silent_rate.cumulative:c1"
    detail = (await api.client.get(path, headers=await api.token("viewer"))).json()
    assert [h["severity"] for h in detail["history"]] == ["warning", "violation"]
    assert [h["kind"] for h in detail["history"]] == ["opened", "updated"]
    assert detail["acknowledged_by"] is None

    acked = await api.client.post(f"{path}/ack", json={"note": "BPO told"}, headers=compliance)
    assert acked.status_code == 200
    body = acked.json()
    assert body["acknowledged_by"] == token[:12]  # a token created without a name
    assert body["acknowledged_at"] == "2026-03-03T09:30:15Z"
    assert body["ack_note"] == "BPO told"

    api.clock.now += timedelta(hours=1)
    again = await api.client.post(f"{path}/ack", json={"note": "again"}, headers=compliance)
    assert again.json()["acknowledged_at"] == "2026-03-03T09:30:15Z"
    assert again.json()["ack_note"] == "BPO told"
    assert [n["note"] for n in again.json()["notes"]] == ["BPO told", "again"]
    no_body = await api.client.post(f"{path}/ack", headers=await api.token("admin"))
    assert no_body.status_code == 200

    missing = await api.client.post("/v1/alerts/nope/ack", json={}, headers=compliance)
    assert missing.status_code == 404
    too_long = await api.client.post(f"{path}/ack", json={"note": "x" * 2001}, headers=compliance)
    assert too_long.status_code == 422


async def test_an_ack_records_the_token_name_and_notes_follow_later(api):
    await api.feed(alert("c1", severity="violation"))
    path = "/v1/alerts/it.silent_rate.cumulative:c1"
    giulia = await api.app.state.tokens.create("compliance", None, "Giulia Rossi")
    marco = await api.app.state.tokens.create("admin", None, "Marco Bianchi")
    as_giulia = {"Authorization": f"Bearer {giulia}"}
    as_marco = {"Authorization": f"Bearer {marco}"}

    acked = await api.client.post(f"{path}/ack", headers=as_giulia)  # no note
    assert acked.status_code == 200
    assert (acked.json()["acknowledged_by"], acked.json()["notes"]) == ("Giulia Rossi", [])
    api.clock.now += timedelta(minutes=5)
    noted = await api.client.post(f"{path}/notes", json={"note": "BPO called"}, headers=as_marco)
    assert noted.status_code == 200
    assert noted.json()["notes"] == [
        {"author": "Marco Bianchi", "note": "BPO called", "recorded_at": "2026-03-03T09:35:15Z"}
    ]
    detail = (await api.client.get(path, headers=await api.token("viewer"))).json()
    assert [(h["kind"], h["author"]) for h in detail["history"]] == [
        ("opened", None),
        ("acknowledged", "Giulia Rossi"),
        ("note", "Marco Bianchi"),
    ]
    assert detail["acknowledged_by"] == "Giulia Rossi"

    viewer = await api.token("viewer")
    refused = await api.client.post(f"{path}/notes", json={"note": "x"}, headers=viewer)
    assert refused.status_code == 403
    empty = await api.client.post(f"{path}/notes", json={"note": ""}, headers=as_marco)
    assert empty.status_code == 422
    unknown = await api.client.post("/v1/alerts/nope/notes", json={"note": "x"}, headers=as_marco)
    assert unknown.status_code == 404


async def test_tenant_bound_tokens_see_only_their_alerts(api):
    await api.feed(
        minute("acme-1", T0, tenant="acme", attempts=1),
        minute("globex-1", T0, tenant="globex", attempts=1),
        alert("acme-1", tenant_id="acme"),
        alert("globex-1", tenant_id="globex"),
    )
    acme_viewer = await api.token("viewer", "acme")
    listed = await api.client.get("/v1/alerts", headers=acme_viewer)
    assert [a["campaign_id"] for a in listed.json()["items"]] == ["acme-1"]
    other = await api.client.get(
        "/v1/alerts/it.silent_rate.cumulative:globex-1", headers=acme_viewer
    )
    assert other.status_code == 404
    ack = await api.client.post(
        "/v1/alerts/it.silent_rate.cumulative:globex-1/ack",
        json={"note": "mine now"},
        headers=await api.token("compliance", "acme"),
    )
    assert ack.status_code == 404
    campaigns = await api.client.get("/v1/campaigns", headers=acme_viewer)
    assert [c["campaign_id"] for c in campaigns.json()["items"]] == ["acme-1"]


# --- health, dashboard, docs -----------------------------------------------------------


async def test_health_readiness_dashboard_and_docs(api):
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"database": "ok", "consumer": "disabled"}
    page = await api.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/dashboard/dashboard.js">' in page.text  # no CDN, no inline
    assert "<script>" not in page.text and "<style>" not in page.text
    script = await api.client.get("/static/dashboard/dashboard.js")
    assert script.status_code == 200
    assert "sessionStorage" in script.text and "Authorization" in script.text
    assert (await api.client.get("/docs")).status_code == 200
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert {"/v1/campaigns", "/v1/campaigns/{campaign_id}/stats", "/v1/alerts"} <= set(paths)


async def test_readiness_is_503_while_the_consumer_is_not_running(tmp_path):
    class NeverConnects:
        async def start(self):
            raise OSError("no broker")

        async def stop(self):
            pass

    app = create_app(
        settings_for(tmp_path),
        campaign_publisher=FakePublisher(),
        consumer_factory=NeverConnects,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "consumer": "stopped", "broker": "unreachable"}


async def test_ingest_routes_are_mounted_when_serve_ingest(tmp_path):
    import services.ingest.routes  # noqa: F401 - mounted by the app; must import

    app = create_app(
        settings_for(tmp_path).model_copy(
            update={"serve_ingest": True, "kafka_bootstrap": "127.0.0.1:1"}
        ),
        consumer_enabled=False,
        campaign_publisher=FakePublisher(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.post("/v1/cdrs", json=[])
    assert response.status_code == 401
    assert app.state.ingest is not None


# --- tenancy is a key (issue 6) --------------------------------------------------------


async def test_another_tenants_records_for_the_same_campaign_id_never_move_its_figures(api):
    # Reproduction of issue 6 #1: tenant A's ingest token posting campaign_id "campB" (B's)
    # made B's stats move. The detector now publishes A's records as A's campaign campB.
    await api.feed(minute("campB", T0, tenant="tenant-b", attempts=16, silent=16))
    await api.feed(minute("campB", T0, tenant="tenant-a", attempts=50))
    b = await api.token("viewer", "tenant-b")
    a = await api.token("viewer", "tenant-a")
    params = {"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:01:00Z"}
    b_stats = (await api.client.get("/v1/campaigns/campB/stats", params=params, headers=b)).json()
    a_stats = (await api.client.get("/v1/campaigns/campB/stats", params=params, headers=a)).json()
    assert (b_stats["tenant_id"], b_stats["attempts"], b_stats["silent"]) == ("tenant-b", 16, 16)
    assert (a_stats["tenant_id"], a_stats["attempts"], a_stats["silent"]) == ("tenant-a", 50, 0)


async def test_squatting_a_campaign_id_gives_each_tenant_its_own_campaign(api):
    # Reproduction of issue 6 #1 (squatting): A posts one CDR to squat1, then B posts 120.
    await api.feed(
        minute("squat1", T0, tenant="tenant-a", attempts=1),
        alert("squat1", tenant_id="tenant-a", id="alert-a", evidence={"call_ids": ["a-1"]}),
    )
    await api.feed(
        minute("squat1", T0, tenant="tenant-b", attempts=120),
        alert("squat1", tenant_id="tenant-b", id="alert-b", evidence={"call_ids": ["b-7"]}),
    )
    for tenant, attempts, evidence in (("tenant-a", 1, ["a-1"]), ("tenant-b", 120, ["b-7"])):
        token = await api.token("viewer", tenant)
        stats = await api.client.get(
            "/v1/campaigns/squat1/stats",
            params={"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:01:00Z"},
            headers=token,
        )
        assert (stats.status_code, stats.json()["attempts"]) == (200, attempts)
        alerts = (await api.client.get("/v1/alerts", headers=token)).json()["items"]
        assert [a["evidence"]["call_ids"] for a in alerts] == [evidence]
        assert {a["tenant_id"] for a in alerts} == {tenant}
        compliance = await api.client.get("/v1/campaigns/squat1/compliance", headers=token)
        assert compliance.json()["tenant_id"] == tenant


async def test_unbound_tokens_name_a_tenant_and_list_every_tenants_items(api):
    await api.feed(
        minute("c1", T0, tenant="acme", attempts=3),
        minute("c1", T0, attempts=5),  # no tenant: the default tenant's
        alert("c1", tenant_id="acme", id="acme-alert"),
        alert("c1", id="default-alert"),
    )
    viewer = await api.token("viewer")
    params = {"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:01:00Z"}
    default = await api.client.get("/v1/campaigns/c1/stats", params=params, headers=viewer)
    assert (default.json()["tenant_id"], default.json()["attempts"]) == ("default", 5)
    acme = await api.client.get(
        "/v1/campaigns/c1/stats", params={**params, "tenant": "acme"}, headers=viewer
    )
    assert (acme.json()["tenant_id"], acme.json()["attempts"]) == ("acme", 3)
    missing = await api.client.get(
        "/v1/campaigns/c1/stats", params={**params, "tenant": "nobody"}, headers=viewer
    )
    assert missing.status_code == 404
    listed = (await api.client.get("/v1/campaigns", headers=viewer)).json()["items"]
    assert [(c["campaign_id"], c["tenant_id"]) for c in listed] == [
        ("c1", "acme"),
        ("c1", "default"),
    ]
    only = (await api.client.get("/v1/campaigns?tenant=acme", headers=viewer)).json()["items"]
    assert [c["tenant_id"] for c in only] == ["acme"]
    alerts = (await api.client.get("/v1/alerts", headers=viewer)).json()["items"]
    assert sorted((a["id"], a["tenant_id"]) for a in alerts) == [
        ("acme-alert", "acme"),
        ("default-alert", "default"),
    ]
    # A bound token naming another tenant: as if nothing were there.
    bound = await api.token("viewer", "acme")
    other = await api.client.get(
        "/v1/campaigns/c1/stats", params={**params, "tenant": "default"}, headers=bound
    )
    assert other.status_code == 404
    own = await api.client.get(
        "/v1/campaigns/c1/stats", params={**params, "tenant": "acme"}, headers=bound
    )
    assert own.json()["attempts"] == 3
    assert (await api.client.get("/v1/alerts?tenant=default", headers=bound)).json()["items"] == []
    assert (await api.client.get("/v1/campaigns?tenant=default", headers=bound)).json()[
        "items"
    ] == []


# --- parameters: 422, never 500 (issue 6 #9) -------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/campaigns/c1/stats", {"from": "0001-01-01T00:30:00+01:00"}, "from"),
        ("/v1/campaigns/c1/stats", {"to": "9999-12-31T23:30:00-01:00"}, "to"),
        ("/v1/campaigns/c1/stats", {"from": "0001-01-01T00:00:00Z"}, "from"),
        ("/v1/campaigns/c1/stats", {"to": "9999-12-31T23:59:00Z"}, "to"),
        ("/v1/campaigns/c1/compliance", {"from": "0001-01-01T00:30:00+01:00"}, "from"),
        ("/v1/campaigns/c1/compliance", {"to": "9999-12-31T23:30:00-01:00"}, "to"),
        ("/v1/alerts", {"since": "0001-01-01T00:30:00+01:00"}, "since"),
        ("/v1/alerts", {"since": "1999-12-31T23:59:59Z"}, "since"),
        ("/v1/campaigns", {"tenant": "a/b"}, "tenant"),
        ("/v1/campaigns", {"tenant": "x" * 129}, "tenant"),
        ("/v1/alerts", {"campaign_id": "bad\x1bid"}, "campaign_id"),
    ],
)
async def test_out_of_range_parameters_are_422_naming_them(api, path, params, field):
    await api.feed(minute("c1", T0, attempts=1))
    response = await api.client.get(path, params=params, headers=await api.token("viewer"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


@pytest.mark.parametrize(
    "values",
    [
        ["0001-01-01T00:30:00+01:00", "x"],
        ["9999-12-31T23:30:00-01:00", "x"],
        ["0001-01-01T00:00:00Z", "x"],
        [1, 2],
        ["a", "b", "c"],
    ],
)
async def test_forged_cursors_are_422(api, values):
    import base64

    cursor = base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")
    viewer = await api.token("viewer")
    for path in ("/v1/alerts", "/v1/campaigns"):
        response = await api.client.get(path, params={"cursor": cursor}, headers=viewer)
        assert response.status_code in (200, 422), response.text
        if path == "/v1/alerts" and values != ["0001-01-01T00:00:00Z", "x"]:
            assert response.status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/v1/campaigns/bad%00id/stats",
        "/v1/campaigns/bad%1Bid/compliance",
        "/v1/campaigns/bad%0Aid/stats",
        "/v1/campaigns/" + "x" * 129 + "/stats",
        "/v1/alerts/bad%00id",
    ],
)
async def test_ids_with_control_characters_or_too_long_are_422(api, path):
    response = await api.client.get(path, headers=await api.token("viewer"))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"profile": "it", "overrides": {"min_sample": 1' + b"0" * 100 + b"}}", "min_sample"),
        (b'{"profile": "it", "overrides": {"silent_rate_max": NaN}}', "silent_rate_max"),
        (b'{"amd_false_positive_ratio": NaN}', "amd_false_positive_ratio"),
        (b'{"amd_false_positive_ratio": Infinity}', "amd_false_positive_ratio"),
        (b'{"amd_false_positive_ratio": -Infinity}', "amd_false_positive_ratio"),
    ],
    ids=["min-sample-10e100", "override-nan", "ratio-nan", "ratio-inf", "ratio-minus-inf"],
)
async def test_put_with_absurd_numbers_is_422_naming_the_key(api, body, field):
    response = await api.client.put(
        "/v1/campaigns/c1",
        content=body,
        headers={**await api.token("admin"), "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert field in str(response.json()["detail"][0]["loc"])
    assert api.publisher.records == []
