"""Chaos: a ledgered load of CDRs from three tenants and five campaigns is posted to the
running stack while a detector process (the CDR stage and the per-callee stage in turn) is
SIGKILLed every CDRWATCH_CHAOS_DETECTOR_EVERY seconds, the api, the ingest and the broker
are SIGKILLed once each, and the whole stack is stopped
with Ctrl-C and started again on the same data directory. Posters behave like dialers:
a 503 (or a refused connection, or a timeout) is retried with the same batch and the same
call ids. At the end every campaign's stats, hour by hour, and its alerts must be exactly
what the pure core computes from the records the ingest acknowledged with 202.

Prints one line: `chaos: N CDRs sent, accepted A, lost L, double counted D, duplicate
alerts X, 5xx F` (issue 6, item 7). Knobs: tests/chaos/conftest.py.

- N: distinct CDRs offered (a retried batch counts once); A: distinct (tenant, call_id)
  named accepted by a 202. Planted bad records must come back rejected naming their field.
- L, D: per campaign and hour window, attempts the ledger expects but the API lacks (L)
  or shows beyond it (D); every other figure must match too (reported separately).
- X: alerts the API shows more than once for one alert: an id listed twice, or two ids
  for one episode of a cumulative/rolling rule (one per campaign and rule) — a replay
  must not open a second alert.
- F: every 5xx from ingest or api, except a 503 with Retry-After (the documented "broker
  down, nothing accepted, retry" answer, which the posters retry like a dialer).
"""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from services.detector.core.profiles import load_profile
from tests.chaos.conftest import ChaosSettings, ChaosStack
from tests.chaos.ledger import (
    CALL_SPACING,
    DEFAULT_TENANT,
    PLANTS,
    T0,
    Batch,
    CallFactory,
    Campaign,
    Ledger,
    accepted_calls,
    compliance_row,
    default_campaigns,
    expected_alerts,
    expected_compliance,
    expected_minutes,
    window_counts,
)

pytestmark = pytest.mark.chaos

RETRY_GRACE_SECONDS = 120.0  # how long a dialer keeps retrying a batch after the load ends
EPISODE_WINDOWS = ("cumulative", "15m", "1h", "24h", "sliding_24h")


def iso_z(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Tokens:
    """Ingest tokens per tenant (the default tenant's is the unbound one the stack printed);
    recreated once per stack start if the stack forgot them (reported as a problem)."""

    def __init__(self, stack: ChaosStack, ledger: Ledger, tenants: set[str]) -> None:
        self.stack = stack
        self.ledger = ledger
        self.tenants = sorted(t for t in tenants if t != DEFAULT_TENANT)
        self._lock = threading.Lock()
        self._bound: dict[str, str] = {}
        self._created_at_start = 0
        self.create()

    def create(self) -> None:
        self._bound = {t: self.stack.create_token("ingest", t) for t in self.tenants}
        self._created_at_start = self.stack.starts

    def ingest(self, tenant: str) -> str:
        with self._lock:
            return self.stack.tokens["ingest"] if tenant == DEFAULT_TENANT else self._bound[tenant]

    def refused(self, token: str) -> None:
        """A token that worked was refused with 401 (a restart lost it): reported, and the
        tenants' tokens are created again so that the load goes on."""
        with self._lock:
            if token in self._bound.values():
                when = (
                    f"after restart {self.stack.starts - 1}"
                    if self._created_at_start != self.stack.starts
                    else "without a restart"
                )
                self.ledger.problem(f"tenant ingest tokens were refused {when}")
                self.create()
            elif token == self.stack.tokens["ingest"]:
                self.ledger.problem("the ingest token the stack printed was refused")


class Poster(threading.Thread):
    """One dialer: posts batches for its campaigns, in order, at its share of the rate."""

    def __init__(
        self,
        name: str,
        campaigns: list[Campaign],
        stack: ChaosStack,
        tokens: Tokens,
        ledger: Ledger,
        factory: CallFactory,
        rate: float,
        load_end: float,
        seed: int,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.campaigns = campaigns
        self.stack = stack
        self.tokens = tokens
        self.ledger = ledger
        self.factory = factory
        self.rate = rate
        self.load_end = load_end
        self.random = random.Random(seed)
        self.serial = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=30) as client:
                self.probes(client)
                turn = 0
                while time.monotonic() < self.load_end:
                    started = time.monotonic()
                    batch = self.next_batch(self.campaigns[turn % len(self.campaigns)])
                    turn += 1
                    self.post(client, batch)
                    pause = len(batch.records) / self.rate - (time.monotonic() - started)
                    if pause > 0:
                        time.sleep(min(pause, max(0.0, self.load_end - time.monotonic())))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def next_batch(self, campaign: Campaign) -> Batch:
        size = self.random.randint(50, 300)
        if self.random.random() < 0.03:  # a batch of bad records only: 422
            records, planted = [], {}
            for i in range(self.random.randint(1, 3)):
                plant = self.random.choice(sorted(PLANTS))
                self.serial += 1
                records.append(self.factory.planted(campaign, plant, self.serial))
                planted[i] = plant
            return Batch(campaign, records, planted)
        records = self.factory.next_calls(campaign, size)
        planted: dict[int, str] = {}
        if self.random.random() < 0.3:
            for _ in range(self.random.randint(1, 3)):
                plant = self.random.choice(sorted(PLANTS))
                self.serial += 1
                index = self.random.randint(0, len(records))
                records.insert(index, self.factory.planted(campaign, plant, self.serial))
                planted = {(i + 1 if i >= index else i): p for i, p in planted.items()}
                planted[index] = plant
        return Batch(campaign, records, planted)

    def post(self, client: httpx.Client, batch: Batch) -> None:
        """POST until a definitive answer: 202 or a 4xx. 503s, refused connections and
        timeouts are retried with the same body, as a dialer does."""
        body = orjson.dumps(batch.records)
        self.ledger.offered(batch)
        deadline = self.load_end + RETRY_GRACE_SECONDS
        while True:
            token = self.tokens.ingest(batch.campaign.tenant)
            try:
                response = client.post(
                    f"{self.stack.ingest_url}/v1/cdrs",
                    content=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
            except httpx.HTTPError:
                self.ledger.connection_error()
                response = None
            if response is not None:
                retry_after = response.headers.get("retry-after")
                self.ledger.answer(response.status_code, retry_after)
                if response.status_code == 202:
                    self.ledger.accepted_batch(batch, response.json())
                    return
                if response.status_code == 401:
                    self.tokens.refused(token)
                elif response.status_code < 500:
                    self.ledger.rejected_batch(batch, response.status_code, response.text)
                    return
            if time.monotonic() > deadline:
                self.ledger.problem(
                    f"a batch of {batch.campaign.scoped} got no definitive answer within "
                    f"{RETRY_GRACE_SECONDS:.0f} s after the load ended (last: "
                    f"{response.status_code if response is not None else 'no connection'})"
                )
                return
            time.sleep(0.5 if response is None else min(2.0, _seconds(retry_after, 0.5)))

    def probes(self, client: httpx.Client) -> None:
        """Bad requests a dialer or an attacker sends: a forged token (401) and, from the
        first poster, one body over the record limit (413). Neither may count anything."""
        campaign = self.campaigns[0]
        base = self.factory.call(campaign, 0, 1)
        forged = client.post(
            f"{self.stack.ingest_url}/v1/cdrs",
            json=[dict(base, call_id=f"{self.factory.run_tag}-forged")],
            headers={"Authorization": "Bearer not-a-token"},
        )
        self.ledger.answer(forged.status_code, None)
        if forged.status_code != 401:
            self.ledger.problem(f"a forged token got {forged.status_code}, not 401")
        if self.name != "poster-0":
            return
        token = self.tokens.ingest(campaign.tenant)
        records = [dict(base, call_id=f"{self.factory.run_tag}-over-{i}") for i in range(10_001)]
        over = client.post(
            f"{self.stack.ingest_url}/v1/cdrs",
            content=orjson.dumps(records),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        self.ledger.answer(over.status_code, None)
        if over.status_code != 413:
            self.ledger.problem(f"10,001 records got {over.status_code}, not 413")


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(0.1, float(value)) if value else default
    except ValueError:
        return default


class Reader(threading.Thread):
    """A dashboard reading stats and alerts during the chaos: the api must never 5xx."""

    def __init__(
        self, stack: ChaosStack, ledger: Ledger, campaigns: list[Campaign], until: float
    ) -> None:
        super().__init__(name="reader", daemon=True)
        self.stack, self.ledger, self.campaigns, self.until = stack, ledger, campaigns, until

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while time.monotonic() < self.until:
                campaign = self.campaigns[n % len(self.campaigns)]
                n += 1
                paths = [
                    f"/v1/campaigns/{campaign.campaign_id}/stats",
                    f"/v1/campaigns/{campaign.campaign_id}/compliance",
                    f"/v1/alerts?campaign_id={campaign.campaign_id}",
                ]
                for path in paths:
                    try:
                        response = client.get(
                            f"{self.stack.api_url}{path}",
                            params={"tenant": campaign.tenant},
                            headers={"Authorization": f"Bearer {self.stack.tokens['viewer']}"},
                        )
                    except httpx.HTTPError:
                        continue
                    if response.status_code >= 500:
                        self.ledger.answer(
                            response.status_code, response.headers.get("retry-after")
                        )
                        if response.status_code == 503 and response.headers.get("retry-after"):
                            continue
                        self.ledger.problem(
                            f"GET {path}: {response.status_code} {response.text[:200]}"
                        )
                time.sleep(1.0)


def run_faults(
    stack: ChaosStack, settings: ChaosSettings, start: float, stop: threading.Event
) -> None:
    """The fault schedule over the load: a detector process every N s (its two stages in
    turn); api, ingest, broker once each; one whole-stack restart."""
    length = settings.seconds
    once = {
        "api": 0.2 * length,
        "ingest": 0.3 * length,
        "broker": 0.45 * length,
        "restart": 0.6 * length,  # the stack takes ~20 s to come back: load goes on after
    }
    plan: list[tuple[float, str]] = [(t, f) for f, t in once.items() if f in settings.faults]
    if "detector" in settings.faults and settings.detector_every > 0:
        # `cdrwatch up` runs the detector's two stages as two processes: the kills take
        # turns, the CDR stage first.
        t, turn = settings.detector_every, 0
        while t < length:
            plan.append((t, ("detector", "detector-callees")[turn % 2]))
            t += settings.detector_every
            turn += 1
    for at, fault in sorted(plan):
        while time.monotonic() < start + at:
            if stop.wait(0.2):
                return
        if fault == "restart":
            stack.restart()
        else:
            stack.kill(fault)


def _get(client: httpx.Client, stack: ChaosStack, path: str, **params: Any) -> httpx.Response:
    return client.get(
        f"{stack.api_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {stack.tokens['viewer']}"},
    )


def hour_windows(factory: CallFactory, campaign: Campaign) -> list[tuple[datetime, datetime]]:
    """Hour windows covering every call the factory could have made for the campaign."""
    last = T0 + (factory.made(campaign) + 1) * CALL_SPACING
    start = T0.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    out = []
    while start <= last:
        out.append((start, start + timedelta(hours=1)))
        start += timedelta(hours=1)
    return out


def read_stats(
    stack: ChaosStack,
    campaigns: list[Campaign],
    windows: dict[str, list[tuple[datetime, datetime]]],
) -> dict[tuple[str, datetime], dict[str, int] | None]:
    out: dict[tuple[str, datetime], dict[str, int] | None] = {}
    with httpx.Client(timeout=30) as client:
        for campaign in campaigns:
            for start, end in windows[campaign.scoped]:
                try:
                    response = _get(
                        client,
                        stack,
                        f"/v1/campaigns/{campaign.campaign_id}/stats",
                        **{"from": iso_z(start), "to": iso_z(end), "tenant": campaign.tenant},
                    )
                except httpx.HTTPError:
                    out[(campaign.scoped, start)] = None
                    continue
                if response.status_code == 200:
                    body = response.json()
                    out[(campaign.scoped, start)] = {
                        k: body[k]
                        for k in (
                            "attempts",
                            "answered",
                            "answered_by_person",
                            "amd_machine",
                            "silent",
                            "abandoned",
                            "out_of_hours",
                            "short_ring",
                        )
                    }
                else:
                    out[(campaign.scoped, start)] = None
    return out


def read_compliance(
    stack: ChaosStack, campaigns: list[Campaign]
) -> dict[str, list[tuple[Any, ...]] | None]:
    out: dict[str, list[tuple[Any, ...]] | None] = {}
    with httpx.Client(timeout=30) as client:
        for campaign in campaigns:
            try:
                response = _get(
                    client,
                    stack,
                    f"/v1/campaigns/{campaign.campaign_id}/compliance",
                    tenant=campaign.tenant,
                )
            except httpx.HTTPError:
                out[campaign.scoped] = None
                continue
            if response.status_code != 200:
                out[campaign.scoped] = None
                continue
            out[campaign.scoped] = [
                compliance_row(
                    w["rule"],
                    w["window"],
                    w["start"],
                    w["numerator"],
                    w["denominator"],
                    w["verdict"],
                )
                for w in response.json()["windows"]
            ]
    return out


def read_alerts(stack: ChaosStack, tenants: set[str]) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        for tenant in sorted(tenants):
            cursor = None
            while True:
                params: dict[str, Any] = {"tenant": tenant, "limit": 100}
                if cursor:
                    params["cursor"] = cursor
                try:
                    response = _get(client, stack, "/v1/alerts", **params)
                except httpx.HTTPError:
                    return None
                if response.status_code != 200:
                    return None
                page = response.json()
                for item in page["items"]:
                    items.append({**item, "tenant_id": item.get("tenant_id") or tenant})
                cursor = page.get("next_cursor")
                if not cursor:
                    break
    return items


def settle(read: Any, expected: Any, timeout: float, quiet: float) -> Any:
    """Poll `read()` until it equals `expected`, or has not changed for `quiet` seconds, or
    `timeout` passed; the last value read."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        value = read()
        if value == expected:
            return value
        now = time.monotonic()
        if value != last:
            last, since = value, now
        elif now - since >= quiet or now >= deadline:
            return value
        if now >= deadline:
            return value
        time.sleep(2.0)


def alert_key(alert: dict[str, Any], episode_rules: set[str]) -> tuple[str, ...]:
    """Episode rules (cumulative and rolling windows) are keyed per campaign and rule: at
    most one of their episodes may be firing, and the latest is compared with the ledger's
    (a rolling rule's earlier episodes, resolved, are its history); day, period and
    per-call alerts are one per id (rule, campaign, window)."""
    base = (alert.get("tenant_id") or DEFAULT_TENANT, alert["campaign_id"], alert["rule"])
    return base if alert["rule"] in episode_rules else (*base, alert["id"])


def compare_alerts(
    actual: list[dict[str, Any]], expected: dict[str, dict[str, Any]], episode_rules: set[str]
) -> tuple[int, list[str]]:
    """(duplicate alerts, other mismatches)."""
    problems: list[str] = []
    ids = Counter(a["id"] for a in actual)
    duplicates = sum(n - 1 for n in ids.values())
    problems += [f"alert id {i} listed {n} times" for i, n in ids.items() if n > 1]
    by_key: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for alert in {a["id"]: a for a in actual}.values():
        by_key.setdefault(alert_key(alert, episode_rules), []).append(alert)
    want = {alert_key(a, episode_rules): a for a in expected.values()}
    for key, alerts in by_key.items():
        if key not in want:
            problems.append(f"unexpected alert {key}: {_brief(alerts[0])}")
            continue
        firing = [a for a in alerts if a.get("state") == "firing"]
        extra = len(firing) - 1 if key[2] in episode_rules else len(alerts) - 1
        duplicates += max(0, extra)
        if extra > 0:
            problems.append(
                f"duplicate alerts {key}: "
                + ", ".join(f"{a['id']} {_brief(a)} window {a.get('window')}" for a in alerts)
            )
        w = want[key]
        got = firing[0] if firing else max(alerts, key=lambda a: str(a["window"]["start"]))
        fields = ("state", "severity", "numerator", "denominator")
        if any(got.get(f) != w.get(f) for f in fields):
            problems.append(f"alert {key}: API {_brief(got)}, ledger {_brief(w)}")
    for key in want.keys() - by_key.keys():
        problems.append(f"missing alert {key}: ledger {_brief(want[key])}")
    return duplicates, problems


def _brief(alert: dict[str, Any]) -> str:
    return (
        f"{alert.get('state')}/{alert.get('severity')} "
        f"{alert.get('numerator')}/{alert.get('denominator')}"
    )


def test_no_accepted_cdr_is_lost_or_double_counted_under_faults(
    chaos_stack: ChaosStack, chaos_settings: ChaosSettings, request: pytest.FixtureRequest
) -> None:
    stack, settings = chaos_stack, chaos_settings
    campaigns = default_campaigns()
    tenants = {c.tenant for c in campaigns}
    ledger = Ledger()
    factory = CallFactory(f"chaos{uuid.uuid4().hex[:6]}")
    tokens = Tokens(stack, ledger, tenants)

    with httpx.Client(timeout=30) as admin:
        for campaign in campaigns:  # profiles before the first CDR (SPEC)
            response = admin.put(
                f"{stack.api_url}/v1/campaigns/{campaign.campaign_id}",
                params={"tenant": campaign.tenant},
                json={"profile": campaign.profile},
                headers={"Authorization": f"Bearer {stack.tokens['admin']}"},
            )
            assert response.status_code == 200, response.text

    by_tenant: dict[str, list[Campaign]] = {}
    for campaign in campaigns:
        by_tenant.setdefault(campaign.tenant, []).append(campaign)
    start = time.monotonic()
    load_end = start + settings.seconds
    posters = [
        Poster(
            f"poster-{i}",
            owned,
            stack,
            tokens,
            ledger,
            factory,
            settings.rate / len(by_tenant),
            load_end,
            seed=i,
        )
        for i, owned in enumerate(by_tenant.values())
    ]
    reader = Reader(stack, ledger, campaigns, load_end)
    stop_faults = threading.Event()
    faults = threading.Thread(
        target=run_faults, args=(stack, settings, start, stop_faults), name="faults", daemon=True
    )
    for thread in (*posters, reader, faults):
        thread.start()
    for poster in posters:
        poster.join(settings.seconds + RETRY_GRACE_SECONDS + 120)
    stop_faults.set()
    faults.join(180)
    reader.join(60)
    for poster in posters:
        assert not poster.is_alive(), f"{poster.name} is still posting"
        if poster.error is not None:
            raise poster.error
    stack.note(f"load over: {ledger.sent} sent, {len(ledger.accepted)} accepted")

    # What the stats and alerts must say, from the pure core.
    calls = accepted_calls(ledger)
    minutes = expected_minutes(calls, campaigns)
    want_alerts = expected_alerts(calls, campaigns)
    stack.note("ledger figures computed with the core")
    windows = {c.scoped: hour_windows(factory, c) for c in campaigns}
    expected_stats = {
        (c.scoped, s): window_counts(minutes[c.scoped], s, e)
        for c in campaigns
        for s, e in windows[c.scoped]
    }
    actual_stats = settle(
        lambda: read_stats(stack, campaigns, windows),
        expected_stats,
        timeout=settings.settle_seconds,
        quiet=30,
    )
    stack.note("stats settled")
    lost = double = 0
    field_problems: list[str] = []
    for key, want in expected_stats.items():
        got = actual_stats.get(key) or dict.fromkeys(want, 0)
        lost += max(0, want["attempts"] - got["attempts"])
        double += max(0, got["attempts"] - want["attempts"])
        if got != want:
            diff = {f: (got[f], want[f]) for f in want if got[f] != want[f]}
            field_problems.append(f"stats {key[0]} {iso_z(key[1])} (API, ledger): {diff}")

    want_compliance = expected_compliance(minutes, campaigns)
    got_compliance = settle(
        lambda: read_compliance(stack, campaigns), want_compliance, timeout=30, quiet=10
    )
    for scoped, want_rows in want_compliance.items():
        got_rows = got_compliance.get(scoped)
        if got_rows != want_rows:
            field_problems.append(
                f"compliance {scoped} (API, ledger): "
                f"{[r for r in (got_rows or []) if r not in want_rows][:3]}, "
                f"{[r for r in want_rows if r not in (got_rows or [])][:3]}"
            )

    episode_rules = {
        rule.id
        for c in campaigns
        for rule in (*load_profile(c.profile).rate_rules, *load_profile(c.profile).early_warning)
        if rule.window in EPISODE_WINDOWS
    }

    def alerts_now() -> tuple[int, list[str]] | None:
        items = read_alerts(stack, tenants)
        return None if items is None else compare_alerts(items, want_alerts, episode_rules)

    alert_outcome = settle(alerts_now, (0, []), timeout=60, quiet=15) or (0, ["alerts unreadable"])
    duplicate_alerts, alert_problems = alert_outcome
    stack.note("alerts settled")

    line = (
        f"chaos: {ledger.sent} CDRs sent, accepted {len(ledger.accepted)}, lost {lost}, "
        f"double counted {double}, duplicate alerts {duplicate_alerts}, 5xx {ledger.five_xx}"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        sys.stdout.write(f"\n{line}\n")
        sys.stdout.flush()
    detail = "\n".join(
        [
            line,
            f"statuses {dict(ledger.statuses)}, 503 retried {ledger.unavailable}, connection "
            f"errors {ledger.connection_errors}, planted rejections {ledger.expected_rejections}",
            "events:",
            *stack.events,
            "problems:",
            *ledger.problems[:30],
            *field_problems[:30],
            *alert_problems[:30],
            "logs:",
            stack.log_tails(),
        ]
    )
    if settings.keep_logs:
        with capture.global_and_fixture_disabled():
            sys.stderr.write(detail[: detail.index("logs:")] + "\n")
    assert (lost, double, duplicate_alerts, ledger.five_xx) == (0, 0, 0, 0), detail
    assert not ledger.problems and not field_problems and not alert_problems, detail
    assert len(ledger.accepted) > 0 and ledger.expected_rejections > 0, detail
