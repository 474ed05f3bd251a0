"""The auth matrix (issue 6, item 7), generated from the apps' own route tables.

Every route of the api and the ingest app (`app.routes`, included routers expanded) ×
every caller — no token, a forged token, each role bound to no tenant and bound to tenant
A — × the tenant the request aims at (A's data or B's). `RULES` says, for each
(app, method, path), the role it requires and how it treats tenants; a route without a
rule fails `test_every_route_has_a_rule`, so a new route cannot ship unjudged.

Two tenants hold the same campaign id `shared` with different figures (A: 11 attempts, B:
22) and one alert each; a tenant-bound token must see and change only its tenant's.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI

from schemas.alert_v1 import AlertV1
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.consumer import alert_message, apply_messages, calls_message, stats_message
from services.api.webhooks import WebhookCreate
from services.common.auth import ROLES, Principal, Role
from services.common.http_security import BASIC_CHALLENGE, route_table
from tests.service.http_apps import build_api, build_ingest, call

TENANT_A, TENANT_B = "tenant-a", "tenant-b"
CAMPAIGN = "shared"
ATTEMPTS = {TENANT_A: 11, TENANT_B: 22}
ALERT_OF = {TENANT_A: "alert-of-a", TENANT_B: "alert-of-b"}
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RANGE = "from=2026-03-02T10:00:00Z&to=2026-03-02T10:01:00Z"
CALL_OF = {TENANT_A: "call-of-a", TENANT_B: "call-of-b"}

Tenancy = Literal[
    "public",  # no token needed; the same answer for everyone
    "campaign",  # reads one campaign of the tenant named with ?tenant=
    "list",  # lists the tenant named with ?tenant= (a bound token: its own only)
    "alert",  # reads one alert by id
    "ack",  # changes one alert by id
    "note",  # adds a note to one alert by id
    "webhook",  # reads one webhook (or its deliveries) by id
    "webhook_create",  # registers a webhook for the tenant named in the body
    "webhook_delete",  # deletes one webhook by id (a fresh one per case)
    "configure",  # changes one campaign of the tenant named (query or body)
    "write",  # writes CDRs naming a tenant
    "freeswitch",  # writes one mod_json_cdr / mod_xml_cdr CDR naming a tenant (Basic or Bearer)
    "metrics",  # the api's Prometheus series
    "call",  # reads one traced call of a campaign of the tenant named with ?tenant=
    "report",  # the audit pack of the tenant named with ?tenant= (every campaign of it)
    "whoami",  # the caller's own role and tenant
    "stream",  # server-sent events of the tenant named with ?tenant= (a bound token: its own)
]


@dataclass(frozen=True)
class Rule:
    role: Role | None
    tenancy: Tenancy


PUBLIC = Rule(None, "public")
RULES: dict[tuple[str, str, str], Rule] = {
    ("api", "GET", "/openapi.json"): PUBLIC,
    ("api", "HEAD", "/openapi.json"): PUBLIC,
    ("api", "GET", "/healthz"): PUBLIC,
    ("api", "GET", "/readyz"): PUBLIC,
    ("api", "GET", "/docs"): PUBLIC,
    ("api", "GET", "/"): PUBLIC,  # the page holds no data; it asks for a token
    ("api", "*", "/static/dashboard"): PUBLIC,
    ("api", "*", "/static/docs"): PUBLIC,
    ("api", "*", "/static/docs/swagger"): PUBLIC,
    ("api", "GET", "/metrics"): Rule("viewer", "metrics"),
    ("api", "POST", "/v1/cdrs"): Rule("ingest", "write"),
    ("api", "GET", "/v1/campaigns"): Rule("viewer", "list"),
    ("api", "GET", "/v1/campaigns/{campaign_id}"): Rule("viewer", "campaign"),
    ("api", "GET", "/v1/campaigns/{campaign_id}/rejections"): Rule("viewer", "campaign"),
    ("api", "GET", "/v1/campaigns/{campaign_id}/stats"): Rule("viewer", "campaign"),
    ("api", "GET", "/v1/rejections/unattributed"): Rule("viewer", "list"),
    ("api", "GET", "/v1/campaigns/{campaign_id}/compliance"): Rule("viewer", "campaign"),
    ("api", "GET", "/v1/campaigns/{campaign_id}/minutes"): Rule("viewer", "campaign"),
    ("api", "GET", "/v1/alerts/stream"): Rule("viewer", "stream"),
    ("api", "GET", "/v1/me"): Rule("viewer", "whoami"),
    ("api", "PUT", "/v1/campaigns/{campaign_id}"): Rule("admin", "configure"),
    ("api", "GET", "/v1/alerts"): Rule("viewer", "list"),
    ("api", "GET", "/v1/alerts/{alert_id}"): Rule("viewer", "alert"),
    ("api", "GET", "/v1/calls"): Rule("viewer", "list"),
    ("api", "GET", "/v1/calls/{call_id}"): Rule("viewer", "call"),
    ("api", "GET", "/v1/reports/compliance"): Rule("compliance", "report"),
    ("api", "POST", "/v1/alerts/{alert_id}/ack"): Rule("compliance", "ack"),
    ("api", "POST", "/v1/alerts/{alert_id}/notes"): Rule("compliance", "note"),
    ("api", "POST", "/v1/webhooks"): Rule("admin", "webhook_create"),
    ("api", "GET", "/v1/webhooks"): Rule("admin", "list"),
    ("api", "GET", "/v1/webhooks/{webhook_id}"): Rule("admin", "webhook"),
    ("api", "GET", "/v1/webhooks/{webhook_id}/deliveries"): Rule("admin", "webhook"),
    ("api", "DELETE", "/v1/webhooks/{webhook_id}"): Rule("admin", "webhook_delete"),
    ("ingest", "GET", "/openapi.json"): PUBLIC,
    ("ingest", "HEAD", "/openapi.json"): PUBLIC,
    ("ingest", "GET", "/healthz"): PUBLIC,
    ("ingest", "GET", "/readyz"): PUBLIC,
    ("ingest", "GET", "/docs"): PUBLIC,
    # Ingest counters carry no campaign or tenant (labels source and reason only).
    ("ingest", "GET", "/metrics"): PUBLIC,
    ("ingest", "*", "/static/docs"): PUBLIC,
    ("ingest", "*", "/static/docs/swagger"): PUBLIC,
    ("ingest", "POST", "/v1/cdrs"): Rule("ingest", "write"),
    ("ingest", "POST", "/v1/cdrs/formats/{format_name}"): Rule("ingest", "write"),
    ("ingest", "POST", "/v1/freeswitch/json_cdr"): Rule("ingest", "freeswitch"),
    ("ingest", "POST", "/v1/freeswitch/xml_cdr"): Rule("ingest", "freeswitch"),
    ("api", "POST", "/v1/cdrs/formats/{format_name}"): Rule("ingest", "write"),
    ("api", "POST", "/v1/freeswitch/json_cdr"): Rule("ingest", "freeswitch"),
    ("api", "POST", "/v1/freeswitch/xml_cdr"): Rule("ingest", "freeswitch"),
}

# Lists the world seeds for both tenants: the own tenant's list is not empty.
SEEDED_LISTS = {"/v1/campaigns", "/v1/alerts", "/v1/webhooks"}
# Receivers nothing listens on (port 9, discard): deliveries fail fast and are retried.
WEBHOOK_URL = "http://127.0.0.1:9/matrix"

# A file to fetch below each static mount.
MOUNT_FILES = {
    "/static/dashboard": "/static/dashboard/dashboard.js",
    "/static/docs": "/static/docs/swagger-init.js",
    "/static/docs/swagger": "/static/docs/swagger/swagger-ui.css",
}


@dataclass(frozen=True)
class Caller:
    """Who calls: `kind` none/forged/token; a token's role and tenant binding."""

    kind: Literal["none", "forged", "token"]
    role: Role | None = None
    tenant: str | None = None

    @property
    def name(self) -> str:
        if self.kind != "token":
            return self.kind
        return f"{self.role}@{self.tenant or 'unbound'}"


CALLERS = [
    Caller("none"),
    Caller("forged"),
    *(Caller("token", role, tenant) for role in ROLES for tenant in (None, TENANT_A)),
]
TARGETS = {TENANT_A: "own", TENANT_B: "other"}


def _tables() -> dict[str, FastAPI]:
    directory = Path(tempfile.mkdtemp(prefix="auth-matrix-"))
    return {"api": build_api(directory), "ingest": build_ingest(directory)}


def _routes() -> list[tuple[str, str, str]]:
    """(app, method, path) of every route; a mount is one entry with method "*"."""
    found = []
    for name, app in _tables().items():
        for entry in route_table(app.routes):
            for method in sorted(entry.methods) if entry.methods else ["*"]:
                found.append((name, method, entry.path))
    return found


ROUTES = _routes()


def test_every_route_has_a_rule():
    missing = [route for route in ROUTES if route not in RULES]
    assert not missing, (
        f"routes without an auth rule: {missing}; add each to RULES in {__file__} with "
        "the role it requires and how it treats tenants"
    )
    stale = [route for route in RULES if route not in ROUTES]
    assert not stale, f"rules for routes that no longer exist: {stale}"


def test_the_rules_match_the_roles_the_routes_demand():
    demanded = {}
    for name, app in _tables().items():
        for entry in route_table(app.routes):
            for method in sorted(entry.methods) if entry.methods else ["*"]:
                demanded[(name, method, entry.path)] = entry.role
    for route, rule in RULES.items():
        assert demanded.get(route) == rule.role, route


def _cases() -> list[Any]:
    cases = []
    for route in ROUTES:
        rule = RULES.get(route)
        if rule is None:
            continue  # reported by test_every_route_has_a_rule
        callers = CALLERS if rule.role is not None else CALLERS[:3]
        single = ("public", "metrics", "whoami")
        targets = [TENANT_A] if rule.tenancy in single else [TENANT_A, TENANT_B]
        for caller in callers:
            for target in targets:
                app, method, path = route
                case_id = f"{app} {method} {path} {caller.name} {TARGETS[target]}"
                cases.append(pytest.param(route, rule, caller, target, id=case_id))
    return cases


CASES = _cases()


@dataclass
class World:
    apps: dict[str, FastAPI]
    tokens: dict[str, str]  # caller name -> token
    webhooks: dict[str, str]  # tenant -> id of a webhook of its own

    @property
    def store(self) -> Any:
        return self.apps["api"].state.store

    def headers(self, caller: Caller) -> dict[str, str]:
        if caller.kind == "none":
            return {}
        if caller.kind == "forged":
            return {"Authorization": "Bearer cdrw_forged-token-that-was-never-issued"}
        return {"Authorization": f"Bearer {self.tokens[caller.name]}"}


def _window(tenant: str, window: str) -> Any:
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    counts.update(attempts=ATTEMPTS[tenant], answered_by_person=ATTEMPTS[tenant], silent=1)
    stats = stats_from_counts(CAMPAIGN, T0, T0 + timedelta(minutes=1), counts)
    return stats_message(stats, window, tenant_id=tenant, profile="it")


def _alert(tenant: str) -> Any:
    return alert_message(
        AlertV1.model_validate(
            {
                "id": ALERT_OF[tenant],
                "rule": "it.silent_rate.cumulative",
                "profile": "it",
                "campaign_id": CAMPAIGN,
                "tenant_id": tenant,
                "severity": "violation",
                "state": "firing",
                "value": 0.04,
                "threshold": 0.03,
                "numerator": 4,
                "denominator": 100,
                "window": {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"},
                "opened_at": "2026-03-02T10:30:00Z",
            }
        )
    )


def _call(tenant: str) -> Any:
    at = T0.isoformat()
    return calls_message(
        CAMPAIGN,
        tenant,
        [{"call_id": CALL_OF[tenant], "originated_at": at, "outcome": "silent", "rule_hits": []}],
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("auth-matrix")
    api, ingest = build_api(directory), build_ingest(directory)
    async with api.router.lifespan_context(api), ingest.router.lifespan_context(ingest):
        await apply_messages(
            api.state.store,
            [
                *(_window(tenant, "minute") for tenant in (TENANT_A, TENANT_B)),
                *(_window(tenant, "cumulative") for tenant in (TENANT_A, TENANT_B)),
                *(_alert(tenant) for tenant in (TENANT_A, TENANT_B)),
                *(_call(tenant) for tenant in (TENANT_A, TENANT_B)),
            ],
        )
        tokens = {
            caller.name: await api.state.tokens.create(caller.role, caller.tenant, caller.name)
            for caller in CALLERS
            if caller.kind == "token"
        }
        webhooks = {tenant: (await _new_webhook(api, tenant)) for tenant in (TENANT_A, TENANT_B)}
        yield World({"api": api, "ingest": ingest}, tokens, webhooks)


async def _new_webhook(api: FastAPI, tenant: str) -> str:
    created = await api.state.webhooks.create(WebhookCreate(url=WEBHOOK_URL), tenant)
    return str(created.id)


async def _webhooks_of(world: World, tenant: str) -> list[str]:
    page = await world.apps["api"].state.webhooks.list_webhooks(tenant)
    return [w.id for w in page.items]


def _path(route_path: str, rule: Rule, target: str) -> str:
    if rule.tenancy in ("alert", "ack", "note"):
        return route_path.replace("{alert_id}", ALERT_OF[target])
    if rule.tenancy == "call":
        return route_path.replace("{call_id}", CALL_OF[target])
    if route_path in MOUNT_FILES:
        return MOUNT_FILES[route_path]
    if "{format_name}" in route_path:
        return route_path.replace("{format_name}", "cdr-v1-ndjson")
    return re.sub(r"\{[^}]+\}", CAMPAIGN, route_path)


def _written_tenant(caller: Caller, target: str) -> str | None:
    """The tenant a written record names: a bound token's records name the target; an
    unbound token's "own" record names none (the default tenant), its "other" names A."""
    if caller.tenant is not None:
        return target
    return TENANT_A if target == TENANT_B else None


def _freeswitch_cdr(route_path: str, caller: Caller, target: str) -> bytes:
    """A mod_json_cdr (or mod_xml_cdr) document of one answered call."""
    tenant = _written_tenant(caller, target)
    variables = {
        "uuid": f"fs-{caller.name}-{target}-{route_path.rsplit('/', 1)[-1]}",
        "cdrwatch_campaign": CAMPAIGN,
        "start_uepoch": "1772445600000000",
        "answer_uepoch": "1772445605000000",
        "end_uepoch": "1772445660000000",
        **({"cdrwatch_tenant": tenant} if tenant else {}),
    }
    if route_path.endswith("xml_cdr"):
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in variables.items())
        return (
            f"<cdr><variables>{inner}</variables><callflow><caller_profile>"
            "<destination_number>%2B393471234567</destination_number>"
            "</caller_profile></callflow></cdr>"
        ).encode()
    return orjson.dumps(
        {
            "variables": variables,
            "callflow": [{"caller_profile": {"destination_number": "+393471234567"}}],
        }
    )


def _request(
    rule: Rule, caller: Caller, target: str, route_path: str = ""
) -> tuple[str, bytes | None]:
    """(query, body) of the request a case sends."""
    if rule.tenancy == "freeswitch":
        return "", _freeswitch_cdr(route_path, caller, target)
    if rule.tenancy == "call":
        return f"tenant={target}&campaign_id={CAMPAIGN}", None
    if rule.tenancy == "report":
        return f"tenant={target}&{RANGE}", None
    if rule.tenancy == "stream":
        return f"tenant={target}", None
    if rule.tenancy in ("campaign", "list"):
        return (
            f"tenant={target}&{RANGE}" if rule.tenancy == "campaign" else f"tenant={target}",
            None,
        )
    if rule.tenancy == "configure":
        return f"tenant={target}", orjson.dumps({"profile": "uk"})
    if rule.tenancy in ("ack", "note"):
        return "", orjson.dumps({"note": "matrix"})
    if rule.tenancy == "webhook_create":
        return "", orjson.dumps({"url": WEBHOOK_URL, "tenant_id": target})
    if rule.tenancy == "write":
        # An unbound token writes the default tenant: its "own" record names none, its
        # "other" names tenant A. A bound token's records name the target tenant.
        record: dict[str, Any] = {
            "call_id": f"m-{caller.name}-{target}",
            "campaign_id": CAMPAIGN,
            "callee_number": "+393471234567",
            "originated_at": "2026-03-02T10:00:00Z",
            "ended_at": "2026-03-02T10:01:00Z",
        }
        tenant = _written_tenant(caller, target)
        if tenant is not None:
            record["tenant_id"] = tenant
        if "/formats/" in route_path:  # cdr-v1-ndjson: one object per line
            record["call_id"] += "-ndjson"
            return "", orjson.dumps(record)
        return "", orjson.dumps([record])
    return "", None


async def _alert_ack(world: World, tenant: str) -> Any:
    alert = await world.store.get_alert(ALERT_OF[tenant], tenant_id=tenant)
    return (alert.acknowledged_by, alert.acknowledged_at)


async def _alert_notes(world: World, tenant: str) -> Any:
    alert = await world.store.get_alert(ALERT_OF[tenant], tenant_id=tenant)
    return alert.notes


async def _campaign_profile(world: World, tenant: str) -> Any:
    page = await world.store.list_campaigns(tenant_id=tenant, cursor=None, limit=100)
    return [(c.campaign_id, c.profile) for c in page.items]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("route", "rule", "caller", "target"), CASES)
async def test_auth_matrix(world: World, route, rule: Rule, caller: Caller, target: str):
    app_name, method, route_path = route
    app = world.apps[app_name]
    path = _path(route_path, rule, target)
    if rule.tenancy == "webhook":
        path = route_path.replace("{webhook_id}", world.webhooks[target])
    if rule.tenancy == "webhook_delete":
        path = route_path.replace("{webhook_id}", await _new_webhook(app, target))
    query, body = _request(rule, caller, target, route_path)
    headers = world.headers(caller)
    if body is not None:
        headers = {**headers, "Content-Type": "application/json"}
    before = None
    if rule.tenancy == "ack":
        before = await _alert_ack(world, TENANT_B)
    if rule.tenancy == "note":
        before = await _alert_notes(world, TENANT_B)
    if rule.tenancy in ("webhook_create", "webhook_delete"):
        before = await _webhooks_of(world, TENANT_B)
    if rule.tenancy == "configure":
        before = await _campaign_profile(world, TENANT_B)
    writes = rule.tenancy in ("write", "freeswitch")
    publisher = app.state.ingest.publisher if writes else None
    published_before = len(publisher.records) if publisher is not None else 0

    until = None
    if rule.tenancy == "stream":
        headers = {**headers, "Last-Event-ID": "0"}  # every change stored so far

        def until(received: bytes) -> bool:
            return b"event: stats" in received

    answer = await call(
        app,
        "GET" if method in ("*", "HEAD") else method,
        path,
        headers=headers,
        chunks=iter([body]) if body is not None else None,
        query=query,
        until=until,
    )
    text = answer.body.decode(errors="replace")
    assert answer.status < 500, text

    if rule.role is None:
        assert answer.status == 200, text
        return
    if caller.kind != "token":
        assert answer.status == 401, text
        challenge = BASIC_CHALLENGE if rule.tenancy == "freeswitch" else "Bearer"
        assert answer.headers.get("www-authenticate") == challenge
        _assert_no_data(text)
        return
    principal = Principal(role=caller.role, tenant_id=caller.tenant)  # type: ignore[arg-type]
    if not principal.can(rule.role):
        assert answer.status == 403, text
        _assert_no_data(text)
        return

    bound = caller.tenant is not None
    refused = bound and target != caller.tenant
    data = (
        orjson.loads(answer.body)
        if answer.headers.get("content-type", "").startswith("application/json")
        else None
    )
    match rule.tenancy:
        case "campaign":
            if refused:
                assert answer.status == 404, text
                _assert_no_data(text)
            else:
                assert answer.status == 200, text
                assert data["campaign_id"] == CAMPAIGN
                if "attempts" in data:
                    attempts = data["attempts"]  # a column of minutes, or a sum
                    total = sum(attempts) if isinstance(attempts, list) else attempts
                    assert total == ATTEMPTS[target]
                if data.get("tenant_id") is not None:
                    assert data["tenant_id"] == target
        case "list":
            assert answer.status == 200, text
            tenants = {item["tenant_id"] for item in data["items"]}
            if refused:
                assert tenants == set(), data
            elif route_path in SEEDED_LISTS:
                assert tenants == {target}, data
            else:
                assert tenants <= {target}, data
        case "call":
            if refused:
                assert answer.status == 404, text
                _assert_no_data(text)
            else:
                assert answer.status == 200, text
                assert (data["call_id"], data["tenant_id"]) == (CALL_OF[target], target)
        case "report":
            if refused:
                assert answer.status == 404, text
                _assert_no_data(text)
            else:
                assert answer.status == 200, text
                assert data["tenant_id"] == target
                [campaign] = data["campaigns"]
                assert (campaign["campaign_id"], campaign["tenant_id"]) == (CAMPAIGN, target)
                assert sum(day["attempts"] for day in campaign["days"]) == ATTEMPTS[target]
        case "alert":
            if refused:
                assert answer.status == 404, text
                _assert_no_data(text)
            else:
                assert answer.status == 200, text
                assert (data["id"], data["tenant_id"]) == (ALERT_OF[target], target)
        case "ack":
            if refused:
                assert answer.status == 404, text
                assert await _alert_ack(world, TENANT_B) == before  # B's alert untouched
            else:
                assert answer.status == 200, text
                assert data["acknowledged_by"] is not None
        case "note":
            if refused:
                assert answer.status == 404, text
                assert await _alert_notes(world, TENANT_B) == before  # B's alert untouched
            else:
                assert answer.status == 200, text
                assert data["notes"][-1]["note"] == "matrix"
                assert data["notes"][-1]["author"] == caller.name  # the token's name
        case "webhook":
            if refused:
                assert answer.status == 404, text
                _assert_no_data(text)
            else:
                assert answer.status == 200, text
                if "items" not in data:  # the webhook itself, else its deliveries
                    assert (data["id"], data["tenant_id"]) == (world.webhooks[target], target)
        case "webhook_create":
            if refused:
                assert answer.status == 403, text
                assert await _webhooks_of(world, TENANT_B) == before
            else:
                assert answer.status == 201, text
                assert data["tenant_id"] == target and data["secret"]
        case "webhook_delete":
            if refused:
                assert answer.status == 404, text
                assert await _webhooks_of(world, TENANT_B) == before  # still there
            else:
                assert answer.status == 204, text
                assert path.rsplit("/", 1)[1] not in await _webhooks_of(world, target)
        case "configure":
            if refused:
                assert answer.status in (403, 404), text
                assert await _campaign_profile(world, TENANT_B) == before
            else:
                assert answer.status == 200, text
                assert (data["tenant_id"], data["profile"]) == (target, "uk")
        case "write":
            new = publisher.records[published_before:]
            if target == TENANT_B:  # a tenant this token may not write
                assert answer.status == 422, text
                assert new == []
            else:
                assert answer.status == 202, text
                expected = caller.tenant or "default"
                assert [r.tenant_id for r in new] == [expected]
        case "freeswitch":
            new = publisher.records[published_before:]
            if target == TENANT_B:  # a tenant this token may not write
                assert answer.status == 422, text  # permanent: mod_json_cdr keeps it
                assert new == []
            else:
                assert answer.status == 200, text  # 2xx: mod_json_cdr does not retry
                expected = caller.tenant or "default"
                assert [r.tenant_id for r in new] == [expected]
        case "whoami":
            assert answer.status == 200, text
            assert data == {"role": caller.role, "tenant_id": caller.tenant}
        case "stream":
            if refused:
                assert answer.status == 404, text
                _assert_no_data(text)
            else:
                assert answer.status == 200, text
                assert answer.headers["content-type"].startswith("text/event-stream")
                events = _sse_events(text)
                alerts = [orjson.loads(e["data"]) for e in events if e.get("event") == "alert"]
                assert {(a["id"], a["tenant_id"]) for a in alerts} == {(ALERT_OF[target], target)}
                stats = [orjson.loads(e["data"]) for e in events if e.get("event") == "stats"]
                assert {c["tenant_id"] for c in stats[0]["items"]} == {target}
        case "metrics":
            assert answer.status == 200, text
            tenants = set(re.findall(r'tenant="([^"]*)"', text))
            assert tenants == ({TENANT_A} if bound else {TENANT_A, TENANT_B}), tenants
        case _:
            raise AssertionError(rule)


def _sse_events(text: str) -> list[dict[str, str]]:
    """The events of a text/event-stream body: field name -> value (comments dropped)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "event" in fields:
            events.append(fields)
    return events


def _assert_no_data(text: str) -> None:
    for secret in (
        *ALERT_OF.values(),
        *CALL_OF.values(),
        "attempts",
        "tenant-b",
        "cdrwatch_campaign",
    ):
        assert secret not in text, text


def test_the_matrix_size():
    """The figure for the issue's closing note (printed with -s)."""
    assert len(CASES) > 200
    print(f"auth matrix: {len(ROUTES)} routes, {len(CASES)} cases")  # noqa: T201
