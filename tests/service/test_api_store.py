"""The api store fed through the consumer's own apply function (SQLite here; the same
tests run against PostgreSQL in tests/integration/test_api_store_postgres.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from schemas.alert_v1 import AlertV1
from schemas.stats_v1 import COUNT_FIELDS, stats_from_counts
from services.api.consumer import Message, alert_message, apply_messages, stats_message
from services.api.models import CampaignConfig
from services.api.store import REJECTION_EXAMPLES, AlertStore, InvalidCursor
from services.common.db import create_engine, migrate

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + timedelta(hours=2))


@pytest.fixture
async def store(tmp_path, clock):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await migrate(engine)
    yield AlertStore(engine, clock=clock)
    await engine.dispose()


def counts(**values: int) -> dict[str, int]:
    return {name: values.get(name, 0) for name in COUNT_FIELDS}


def minute(campaign: str, start: datetime, tenant: str | None = None, **values: int) -> Message:
    stats = stats_from_counts(campaign, start, start + MINUTE, counts(**values))
    return stats_message(stats, "minute", tenant_id=tenant, profile="it")


def window(
    campaign: str, name: str, start: datetime, end: datetime, tenant: str | None = None, **values
) -> Message:
    stats = stats_from_counts(campaign, start, end, counts(**values))
    return stats_message(stats, name, tenant_id=tenant, profile="it")


def alert(
    campaign: str = "c1",
    *,
    rule: str = "it.silent_rate.cumulative",
    severity: str = "warning",
    state: str = "firing",
    opened: datetime = T0,
    numerator: int = 25,
    alert_id: str | None = None,
    tenant: str | None = None,
) -> AlertV1:
    return AlertV1.model_validate(
        {
            "id": alert_id or f"{rule}:{campaign}",
            "rule": rule,
            "profile": "it",
            "campaign_id": campaign,
            "tenant_id": tenant,
            "severity": severity,
            "state": state,
            "value": numerator / 1000,
            "threshold": 0.03,
            "numerator": numerator,
            "denominator": 1000,
            "window": {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()},
            "opened_at": opened.isoformat(),
            "resolved_at": (opened + MINUTE).isoformat() if state == "resolved" else None,
            "evidence": {"call_ids": ["call-1", "call-2"]},
            "reference": "Garante 20 Feb 2014",
        }
    )


async def feed(store: AlertStore, *messages: Message | AlertV1) -> None:
    await apply_messages(
        store, [alert_message(m) if isinstance(m, AlertV1) else m for m in messages]
    )


async def test_stats_are_exact_sums_of_the_minute_buckets_in_the_range(store):
    await feed(
        store,
        minute("c1", T0, attempts=10, answered=8, answered_by_person=7, silent=1),
        minute("c1", T0 + MINUTE, attempts=5, answered=5, answered_by_person=4, abandoned=2),
        minute("c1", T0 + 2 * MINUTE, attempts=3, out_of_hours=3),
        minute("c1", T0 + 60 * MINUTE, attempts=100, short_ring=4),
        minute("c2", T0, attempts=1000),
    )
    first_two = await store.sum_stats("c1", T0, T0 + 2 * MINUTE)
    assert first_two == counts(
        attempts=15, answered=13, answered_by_person=11, silent=1, abandoned=2
    )
    # [10:01, 11:00) excludes 10:00 and the bucket starting exactly at 11:00.
    middle = await store.sum_stats("c1", T0 + MINUTE, T0 + 60 * MINUTE)
    assert middle == counts(
        attempts=8, answered=5, answered_by_person=4, abandoned=2, out_of_hours=3
    )
    everything = await store.sum_stats("c1", T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert everything["attempts"] == 118
    assert everything["short_ring"] == 4
    assert await store.sum_stats("c1", T0 + 3 * MINUTE, T0 + 60 * MINUTE) == counts()


async def test_unknown_campaign_and_other_tenant_get_no_stats(store):
    await feed(store, minute("c1", T0, tenant="acme", attempts=1))
    assert await store.sum_stats("nope", T0, T0 + MINUTE) is None
    assert await store.sum_stats("c1", T0, T0 + MINUTE, tenant_id="other") is None
    assert (await store.sum_stats("c1", T0, T0 + MINUTE, tenant_id="acme"))["attempts"] == 1


async def test_minute_bucket_is_last_write_wins_so_a_rebuild_converges(store):
    # A campaign's messages arrive in order on one partition: the newest is the truth. After
    # the detector rebuilt its state (broker restart), its figures replace the old ones,
    # even where they are smaller (no field-wise max of old and new).
    before = minute("c1", T0, attempts=10, answered=6, answered_by_person=6, silent=2)
    rebuilt = minute("c1", T0, attempts=7, answered=6, answered_by_person=5, silent=3)
    await feed(store, before)
    await feed(store, before)  # redelivered: idempotent
    assert await store.sum_stats("c1", T0, T0 + MINUTE) == counts(
        attempts=10, answered=6, answered_by_person=6, silent=2
    )
    await feed(store, rebuilt)
    result = await store.sum_stats("c1", T0, T0 + MINUTE)
    assert result == counts(attempts=7, answered=6, answered_by_person=5, silent=3)


async def test_same_bucket_twice_in_one_batch_keeps_the_last(store):
    await feed(
        store,
        minute("c1", T0, attempts=3),
        minute("c1", T0, attempts=5, silent=1),
        minute("c1", T0, attempts=4),
    )
    assert await store.sum_stats("c1", T0, T0 + MINUTE) == counts(attempts=4)


async def test_alert_is_upserted_by_id_and_each_change_recorded_once(store, clock):
    await feed(store, alert(severity="warning", numerator=25))
    await feed(store, alert(severity="warning", numerator=25))  # identical re-publish
    await feed(store, alert(severity="warning", numerator=26))  # value moves, same state
    clock.now += MINUTE
    await feed(store, alert(severity="violation", numerator=31))
    await feed(store, alert(severity="violation", numerator=31), alert(severity="violation"))
    clock.now += MINUTE
    await feed(store, alert(severity="violation", state="resolved", numerator=20))

    page = await store.list_alerts(tenant_id=None)
    assert [(a.id, a.severity, a.state, a.numerator) for a in page.items] == [
        ("it.silent_rate.cumulative:c1", "violation", "resolved", 20)
    ]
    detail = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    # Every change of state, severity or figures, once; an identical re-publish adds none.
    assert [(h.kind, h.state, h.severity, h.numerator) for h in detail.history] == [
        ("opened", "firing", "warning", 25),
        ("updated", "firing", "warning", 26),
        ("updated", "firing", "violation", 31),
        ("updated", "firing", "violation", 25),
        ("resolved", "resolved", "violation", 20),
    ]
    assert [h.recorded_at for h in detail.history] == [
        T0 + timedelta(hours=2),
        T0 + timedelta(hours=2),
        T0 + timedelta(hours=2, minutes=1),
        T0 + timedelta(hours=2, minutes=1),
        T0 + timedelta(hours=2, minutes=2),
    ]
    assert [h.value for h in detail.history] == [0.025, 0.026, 0.031, 0.025, 0.02]
    seqs = [h.seq for h in detail.history]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert detail.evidence.call_ids == ["call-1", "call-2"]


async def test_transitions_inside_one_batch_are_all_recorded(store):
    await feed(
        store,
        alert(severity="warning"),
        alert(severity="violation"),
        alert(severity="warning"),
    )
    detail = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    assert [h.severity for h in detail.history] == ["warning", "violation", "warning"]
    assert detail.severity == "warning"


async def test_notes_after_an_ack_without_one_are_kept_with_author_and_time(store, clock):
    alert_id = "it.silent_rate.cumulative:c1"
    await feed(store, alert())
    acked = await store.ack(alert_id, by="Giulia Rossi", note="", tenant_id=None)
    assert (acked.acknowledged_by, acked.ack_note, acked.notes) == ("Giulia Rossi", None, [])
    clock.now += MINUTE
    noted = await store.add_note(alert_id, by="Marco Bianchi", note="BPO called", tenant_id=None)
    clock.now += MINUTE
    # a second ack with a note adds the note and keeps the first ack
    again = await store.ack(alert_id, by="Marco Bianchi", note="dialer paced down", tenant_id=None)
    assert again.acknowledged_by == "Giulia Rossi"
    assert [(n.author, n.note, n.recorded_at) for n in again.notes] == [
        ("Marco Bianchi", "BPO called", T0 + timedelta(hours=2, minutes=1)),
        ("Marco Bianchi", "dialer paced down", T0 + timedelta(hours=2, minutes=2)),
    ]
    assert noted.notes[0].note == "BPO called"
    assert [(h.kind, h.author) for h in again.history] == [
        ("opened", None),
        ("acknowledged", "Giulia Rossi"),
        ("note", "Marco Bianchi"),
        ("note", "Marco Bianchi"),
    ]
    assert all(h.numerator == 25 and h.state == "firing" for h in again.history)
    assert await store.add_note("nope", by="x", note="y", tenant_id=None) is None
    other_tenant = await store.add_note(alert_id, by="x", note="y", tenant_id="globex")
    assert other_tenant is None
    assert len((await store.get_alert(alert_id, tenant_id=None)).notes) == 2


async def test_ack_is_idempotent_and_never_overwritten_by_the_topic(store, clock):
    await feed(store, alert())
    first = await store.ack(
        "it.silent_rate.cumulative:c1", by="cdrw_abcdefg", note="called the BPO", tenant_id=None
    )
    assert first.acknowledged_by == "cdrw_abcdefg"
    assert first.acknowledged_at == clock.now
    assert first.ack_note == "called the BPO"
    clock.now += timedelta(hours=1)
    again = await store.ack(
        "it.silent_rate.cumulative:c1", by="cdrw_zzzzzzz", note="again", tenant_id=None
    )
    assert (again.acknowledged_by, again.acknowledged_at, again.ack_note) == (
        "cdrw_abcdefg",
        T0 + timedelta(hours=2),
        "called the BPO",
    )
    await feed(store, alert(severity="violation"))  # the detector knows nothing of acks
    after = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    assert after.severity == "violation"
    assert after.acknowledged_by == "cdrw_abcdefg"
    assert await store.ack("missing", by="x", note="", tenant_id=None) is None


async def test_alert_pages_are_newest_first_and_cover_everything_once(store):
    opened = [T0, T0 + MINUTE, T0 + MINUTE, T0 + MINUTE, T0 + 3 * MINUTE]
    await feed(
        store,
        *(alert(alert_id=f"a{i}", opened=at, rule=f"rule{i}") for i, at in enumerate(opened)),
    )
    seen, cursor = [], None
    while True:
        page = await store.list_alerts(tenant_id=None, cursor=cursor, limit=2)
        seen += [a.id for a in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["a4", "a3", "a2", "a1", "a0"]
    single = await store.list_alerts(tenant_id=None, limit=5)
    assert single.next_cursor is None
    with pytest.raises(InvalidCursor):
        await store.list_alerts(tenant_id=None, cursor="not-a-cursor")


async def test_alert_filters(store):
    await feed(
        store,
        alert("c1", rule="r1", severity="warning", opened=T0),
        alert("c1", rule="r2", severity="violation", opened=T0 + MINUTE),
        alert("c2", rule="r1", severity="violation", state="resolved", opened=T0 + 2 * MINUTE),
    )

    async def ids(**filters):
        return [a.id for a in (await store.list_alerts(tenant_id=None, **filters)).items]

    assert await ids(campaign_id="c1") == ["r2:c1", "r1:c1"]
    assert await ids(state="resolved") == ["r1:c2"]
    assert await ids(rule="r1") == ["r1:c2", "r1:c1"]
    assert await ids(severity="violation", state="firing") == ["r2:c1"]
    assert await ids(since=T0 + MINUTE) == ["r1:c2", "r2:c1"]


async def test_tenant_sees_only_its_campaigns_and_their_alerts(store):
    await feed(
        store,
        minute("acme-1", T0, tenant="acme", attempts=1),
        minute("globex-1", T0, tenant="globex", attempts=1),
        alert("acme-1", tenant="acme"),
        alert("globex-1", tenant="globex"),
        alert("orphan"),  # an older detector's alert without tenant: the default tenant's
    )
    acme = await store.list_campaigns(tenant_id="acme")
    assert [c.campaign_id for c in acme.items] == ["acme-1"]
    everyone = await store.list_campaigns(tenant_id=None)
    assert [(c.tenant_id, c.campaign_id) for c in everyone.items] == [
        ("acme", "acme-1"),
        ("globex", "globex-1"),
        ("default", "orphan"),
    ]
    alerts = await store.list_alerts(tenant_id="acme")
    assert [a.campaign_id for a in alerts.items] == ["acme-1"]
    assert await store.get_alert("it.silent_rate.cumulative:globex-1", tenant_id="acme") is None
    assert (
        await store.ack("it.silent_rate.cumulative:globex-1", by="x", note="", tenant_id="acme")
        is None
    )
    untouched = await store.get_alert("it.silent_rate.cumulative:globex-1", tenant_id=None)
    assert untouched.acknowledged_by is None


async def test_the_same_campaign_id_in_two_tenants_is_two_campaigns(store):
    # Reproduction of issue 6 #1: nothing is "first tenant seen wins" any more.
    await feed(store, alert("c1"))  # no tenant: the default tenant's
    await feed(store, minute("c1", T0, tenant="acme", attempts=1))
    await feed(store, minute("c1", T0 + MINUTE, tenant="globex", attempts=120))
    await feed(store, minute("c1", T0, tenant="globex", attempts=5))
    assert (await store.get_campaign("c1", tenant_id="acme")).tenant_id == "acme"
    assert (await store.get_campaign("c1", tenant_id="acme")).profile == "it"
    assert (await store.sum_stats("c1", T0, T0 + 2 * MINUTE, tenant_id="acme"))["attempts"] == 1
    assert (await store.sum_stats("c1", T0, T0 + 2 * MINUTE, tenant_id="globex"))["attempts"] == 125
    assert (await store.sum_stats("c1", T0, T0 + 2 * MINUTE))["attempts"] == 0  # default's
    assert (await store.get_campaign("c1")).tenant_id == "default"
    assert await store.get_campaign("c1", tenant_id="initech") is None
    assert [c.tenant_id for c in (await store.list_campaigns(tenant_id=None)).items] == [
        "acme",
        "default",
        "globex",
    ]


async def test_live_window_is_last_write_wins_and_campaign_status(store):
    end = T0 + 30 * MINUTE
    await feed(store, window("c1", "cumulative", T0, end, attempts=150))
    await feed(
        store,
        window("c1", "cumulative", T0, end - MINUTE, attempts=170),
        window("c1", "cumulative", T0, end, attempts=200, answered_by_person=100, silent=4),
        window("c1", "15m", end - 15 * MINUTE, end, attempts=20, answered_by_person=0),
    )
    campaign = await store.get_campaign("c1")
    assert campaign.status == "ok"
    cumulative = campaign.windows["cumulative"]
    assert (cumulative.attempts, cumulative.silent_rate) == (200, 0.04)
    assert campaign.windows["15m"].silent_rate is None  # 0 answered by a person
    await feed(store, alert("c1", severity="warning", rule="r1"))
    assert (await store.get_campaign("c1")).status == "warning"
    await feed(store, alert("c1", severity="violation", rule="r2"))
    campaign = await store.get_campaign("c1")
    assert (campaign.status, campaign.firing_alerts) == ("violation", 2)
    await feed(
        store,
        alert("c1", severity="violation", rule="r2", state="resolved"),
        alert("c1", severity="warning", rule="r1", state="resolved"),
    )
    assert (await store.get_campaign("c1")).status == "ok"


async def test_campaign_pages(store):
    await feed(store, *(minute(f"c{i}", T0, attempts=1) for i in range(5)))
    seen, cursor = [], None
    while True:
        page = await store.list_campaigns(tenant_id=None, cursor=cursor, limit=2)
        seen += [c.campaign_id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["c0", "c1", "c2", "c3", "c4"]


async def test_put_campaign_stores_only_what_was_published(store, clock):
    published: list[CampaignConfig] = []

    async def publish(config: CampaignConfig) -> None:
        published.append(config)

    async def broker_down(config: CampaignConfig) -> None:
        raise ConnectionError("broker down")

    def decide(current):
        assert current is None
        return CampaignConfig(
            campaign_id="c1",
            profile="it",
            overrides={"x": 1},
            tenant_id="acme",
            updated_at=clock.now,
        )

    with pytest.raises(ConnectionError):
        await store.put_campaign("c1", decide, broker_down, tenant_id="acme")
    assert await store.get_campaign("c1", tenant_id="acme") is None

    stored = await store.put_campaign("c1", decide, publish, tenant_id="acme")
    assert [c.campaign_id for c in published] == ["c1"]
    assert (stored.profile, stored.overrides, stored.tenant_id) == ("it", {"x": 1}, "acme")
    assert stored.configured_at == clock.now

    seen = []

    def keep(current):
        seen.append(current)
        return current

    await store.put_campaign("c1", keep, publish, tenant_id="acme")
    assert seen[0].overrides == {"x": 1}
    seen.clear()
    with pytest.raises(ValueError, match="tenant"):  # a configuration keeps its tenant
        await store.put_campaign("c1", decide, publish, tenant_id="globex")
    assert await store.get_campaign("c1", tenant_id="globex") is None


async def test_purge_drops_old_resolved_alerts_and_buckets_behind_the_newest(store, clock):
    await feed(
        store,
        alert("c1", rule="old", state="resolved", opened=T0),
        alert("c1", rule="open", opened=T0),
        minute("c1", T0, attempts=1),
        minute("c1", T0 + timedelta(days=10), attempts=2),
    )
    clock.now = T0 + timedelta(days=40)
    assert await store.purge_older_than(timedelta(days=30)) == (1, 0)
    assert [a.rule for a in (await store.list_alerts(tenant_id=None)).items] == ["open"]
    assert await store.get_alert("old:c1", tenant_id=None) is None
    # buckets expire behind the campaign's newest bucket, never by the wall clock
    assert await store.purge_older_than(timedelta(days=5)) == (0, 1)
    total = await store.sum_stats("c1", T0, T0 + timedelta(days=11))
    assert total["attempts"] == 2


async def test_positions_are_stored_with_the_batch(store):
    await apply_messages(
        store,
        [minute("c1", T0, attempts=1)],
        positions={("g", "cdrwatch.stats.v1", 0): 10, ("g", "cdrwatch.stats.v1", 1): 3},
    )
    await apply_messages(store, [], positions={("g", "cdrwatch.stats.v1", 0): 12})
    assert await store.consumer_positions("g") == {
        ("cdrwatch.stats.v1", 0): 12,
        ("cdrwatch.stats.v1", 1): 3,
    }
    assert await store.consumer_positions("other") == {}


async def test_metrics_snapshot_orders_campaigns_by_first_sighting(store, clock):
    await feed(store, window("zeta", "cumulative", T0, T0 + MINUTE, attempts=1))
    clock.now += MINUTE
    await feed(
        store,
        window("alpha", "cumulative", T0, T0 + MINUTE, attempts=2),
        alert("alpha", rule="r1", severity="violation"),
        alert("zeta", rule="r1", severity="violation"),
        alert("zeta", rule="r2", severity="warning", state="resolved"),
    )
    snapshot = await store.metrics_snapshot()
    assert [(w.campaign_id, w.profile, w.counts["attempts"]) for w in snapshot.windows] == [
        ("zeta", "it", 1),
        ("alpha", "it", 2),
    ]
    assert snapshot.firing == {("default", "r1", "violation"): 2}


async def test_a_replayed_alert_updates_figures_but_not_history_opened_at_or_ack(store, clock):
    first_open = T0
    await feed(store, alert(severity="warning", numerator=25, opened=first_open))
    clock.now += MINUTE
    await feed(store, alert(severity="violation", numerator=40, opened=first_open))
    await store.ack(
        "it.silent_rate.cumulative:c1", by="cdrw_abc", note="BPO called", tenant_id=None
    )
    before = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    assert [(h.kind, h.severity) for h in before.history] == [
        ("opened", "warning"),
        ("updated", "violation"),
        ("acknowledged", "violation"),
    ]

    # After a broker restart the detector re-derives the alert from the archive: it goes
    # through warning -> violation again, with a new opened_at (its state started over).
    clock.now += timedelta(hours=1)
    reopened = T0 + timedelta(hours=3)
    replay = [
        alert_message(alert(severity="warning", numerator=26, opened=reopened), replayed=True),
        alert_message(alert(severity="violation", numerator=41, opened=reopened), replayed=True),
    ]
    await apply_messages(store, replay)
    after = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    assert after.history == before.history
    assert (after.acknowledged_by, after.acknowledged_at, after.ack_note) == (
        before.acknowledged_by,
        before.acknowledged_at,
        before.ack_note,
    )
    assert (after.opened_at, after.severity, after.state) == (first_open, "violation", "firing")
    assert (after.numerator, after.value) == (41, 41 / 1000)

    # Unmarked, the same transition is history as before.
    await feed(store, alert(severity="warning", numerator=30, opened=first_open))
    again = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    assert [h.severity for h in again.history] == ["warning", "violation", "violation", "warning"]


async def test_a_replayed_alert_not_held_yet_is_stored_with_its_history(store):
    await apply_messages(store, [alert_message(alert(severity="warning"), replayed=True)])
    stored = await store.get_alert("it.silent_rate.cumulative:c1", tenant_id=None)
    assert [h.severity for h in stored.history] == ["warning"]
    assert stored.tenant_id == "default"


@pytest.fixture
async def blank_engine(tmp_path):
    """An engine on an empty database (PostgreSQL: an empty schema, see the integration
    module)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}")
    yield engine
    await engine.dispose()


V3_COLUMNS = {
    "api_tokens": {"name"},
    "alert_history": {"tenant_id", "campaign_id", "rule", "kind", "author", "note"},
}


def _version_2_tables(metadata: Any) -> None:
    """api_tokens and alert_history as schema versions 1 and 2 had them."""
    from services.common import db

    for table in (db.api_tokens, db.alert_history):
        columns = [c.copy() for c in table.columns if c.name not in V3_COLUMNS[table.name]]
        sa.Table(table.name, metadata, *columns)


async def test_a_version_1_database_is_migrated_to_tenant_keys(blank_engine):
    """A database of schema version 1 (campaign-keyed, tenant a column) is brought forward
    in place: campaigns without tenant become the default tenant's, stats and alerts
    follow their campaign's tenant, nothing is lost."""
    from services.common import db

    engine = blank_engine
    v1 = sa.MetaData()
    count_columns = [sa.Column(n, sa.BigInteger, nullable=False) for n in COUNT_FIELDS]
    sa.Table(
        "campaigns",
        v1,
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("tenant_id", sa.String(200), nullable=True, index=True),
        sa.Column("profile", sa.String(60)),
        sa.Column("observed_profile", sa.String(60)),
        sa.Column("overrides", sa.JSON, nullable=False),
        sa.Column("amd_false_positive_ratio", sa.Float, nullable=False),
        sa.Column("first_seen_at", db.UtcDateTime, nullable=False),
        sa.Column("configured_at", db.UtcDateTime),
        sa.Column("updated_at", db.UtcDateTime, nullable=False),
    )
    sa.Table(
        "minute_stats",
        v1,
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("minute_start", db.UtcDateTime, primary_key=True),
        *count_columns,
    )
    sa.Table(
        "window_stats",
        v1,
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("window", sa.String(40), primary_key=True),
        sa.Column("profile", sa.String(60)),
        sa.Column("window_from", db.UtcDateTime, nullable=False),
        sa.Column("window_to", db.UtcDateTime, nullable=False),
        *[sa.Column(n, sa.BigInteger, nullable=False) for n in COUNT_FIELDS],
        sa.Column("updated_at", db.UtcDateTime, nullable=False),
    )
    old_alerts = sa.Table(
        "alerts",
        v1,
        *(c.copy() for c in db.alerts.columns if c.name != "tenant_id"),
        sa.Index("ix_alerts_opened_at_id", "opened_at", "id"),
    )
    db.schema_version.to_metadata(v1)
    _version_2_tables(v1)
    zero = dict.fromkeys(COUNT_FIELDS, 0)
    async with engine.begin() as conn:
        await conn.run_sync(v1.create_all)
        await conn.execute(v1.tables["schema_version"].insert().values(id=1, version=1))
        for campaign_id, tenant in (("c1", "acme"), ("c2", None)):
            await conn.execute(
                v1.tables["campaigns"]
                .insert()
                .values(
                    campaign_id=campaign_id,
                    tenant_id=tenant,
                    overrides={},
                    amd_false_positive_ratio=0.0,
                    first_seen_at=T0,
                    updated_at=T0,
                )
            )
            await conn.execute(
                v1.tables["minute_stats"]
                .insert()
                .values(campaign_id=campaign_id, minute_start=T0, **{**zero, "attempts": 3})
            )
            await conn.execute(
                v1.tables["window_stats"]
                .insert()
                .values(
                    campaign_id=campaign_id,
                    window="cumulative",
                    window_from=T0,
                    window_to=T0 + MINUTE,
                    updated_at=T0,
                    **{**zero, "attempts": 3},
                )
            )
        body = alert("c1").model_dump(mode="json")
        await conn.execute(
            old_alerts.insert().values(
                id="a1",
                campaign_id="c1",
                rule="r",
                severity="warning",
                state="firing",
                opened_at=T0,
                body=body,
                updated_at=T0,
            )
        )
    assert await migrate(engine) == db.SCHEMA_VERSION == 3
    store = AlertStore(engine, clock=lambda: T0)
    acme = await store.get_campaign("c1", tenant_id="acme")
    assert (acme.tenant_id, acme.windows["cumulative"].attempts) == ("acme", 3)
    assert (await store.sum_stats("c2", T0, T0 + MINUTE))["attempts"] == 3  # default tenant
    assert (await store.get_alert("a1", tenant_id="acme")).tenant_id == "acme"
    assert await migrate(engine) == 3  # idempotent


async def test_a_version_2_database_gets_token_names_and_full_history(blank_engine):
    """Version 2 -> 3 in place: tokens keep verifying (no name: acks record the prefix),
    history rows take their alert's tenant, campaign and rule and a kind (first row
    "opened", later ones "resolved"/"updated" by state), and new changes, acks and notes
    are recorded after the old rows."""
    from services.common import db
    from services.common.auth import TokenStore, hash_token

    engine = blank_engine
    async with engine.begin() as conn:
        await conn.run_sync(db.metadata.create_all)  # every table, then v2's two back
        for name in ("api_tokens", "alert_history"):
            await conn.exec_driver_sql(f"DROP TABLE {name}")
        v2 = sa.MetaData()
        _version_2_tables(v2)
        await conn.run_sync(v2.create_all)
        await conn.execute(db.schema_version.insert().values(id=1, version=2))
        await conn.execute(
            v2.tables["api_tokens"]
            .insert()
            .values(
                token_hash=hash_token("cdrw_old-token"),
                token_prefix="cdrw_old-tok",
                role="compliance",
                tenant_id="acme",
                created_at=T0,
            )
        )
        held = alert("c1", tenant="acme", severity="violation", state="resolved", numerator=20)
        await conn.execute(
            db.alerts.insert().values(
                id=held.id,
                tenant_id="acme",
                campaign_id="c1",
                rule=held.rule,
                severity="violation",
                state="resolved",
                opened_at=T0,
                body=held.model_dump(mode="json"),
                updated_at=T0,
            )
        )
        for state, severity in (
            ("firing", "warning"),
            ("firing", "violation"),
            ("resolved", "violation"),
        ):
            await conn.execute(
                v2.tables["alert_history"]
                .insert()
                .values(
                    alert_id=held.id,
                    state=state,
                    severity=severity,
                    value=0.02,
                    numerator=20,
                    denominator=1000,
                    recorded_at=T0,
                )
            )
    assert await migrate(engine) == db.SCHEMA_VERSION == 3
    assert await migrate(engine) == 3  # idempotent

    tokens = TokenStore(engine)
    principal = await tokens.verify("cdrw_old-token")
    assert (principal.role, principal.tenant_id, principal.name) == ("compliance", "acme", None)
    assert principal.author == "cdrw_old-tok"
    assert [(t.prefix, t.name) for t in await tokens.list_tokens()] == [("cdrw_old-tok", None)]

    store = AlertStore(engine, clock=lambda: T0 + MINUTE)
    detail = await store.get_alert(held.id, tenant_id="acme")
    assert [(h.kind, h.state, h.severity) for h in detail.history] == [
        ("opened", "firing", "warning"),
        ("updated", "firing", "violation"),
        ("resolved", "resolved", "violation"),
    ]
    async with engine.connect() as conn:
        scopes = (
            await conn.execute(
                sa.select(
                    db.alert_history.c.tenant_id,
                    db.alert_history.c.campaign_id,
                    db.alert_history.c.rule,
                )
            )
        ).all()
    assert set(scopes) == {("acme", "c1", held.rule)}

    await store.ack(held.id, by=principal.author, note="", tenant_id="acme")
    await feed(store, alert("c1", tenant="acme", severity="warning", numerator=26))
    detail = await store.get_alert(held.id, tenant_id="acme")
    assert [(h.kind, h.author) for h in detail.history[3:]] == [
        ("acknowledged", "cdrw_old-tok"),
        ("opened", None),
    ]
    assert detail.acknowledged_by == "cdrw_old-tok"


# --- the alert stream's feed and the campaigns' feed state -------------------------------


async def test_alert_changes_follow_the_history_in_seq_order_per_tenant(store):
    await apply_messages(store, [alert_message(alert("c1", tenant="a"))])
    await apply_messages(store, [alert_message(alert("c2", tenant="b"))])
    await apply_messages(store, [alert_message(alert("c1", tenant="a", severity="violation"))])
    first = await store.latest_alert_seq()
    everything = await store.alert_changes(after=0, tenant_id=None)
    assert [c.seq for c in everything] == sorted(c.seq for c in everything)
    assert everything[-1].seq == first
    assert [(c.alert.campaign_id, c.change.severity) for c in everything] == [
        ("c1", "warning"),
        ("c2", "warning"),
        ("c1", "violation"),
    ]
    only_a = await store.alert_changes(after=0, tenant_id="a")
    assert [(c.alert.tenant_id, c.change.severity, c.alert.severity) for c in only_a] == [
        ("a", "warning", "violation"),  # the change as recorded, the alert as it is now
        ("a", "violation", "violation"),
    ]
    after_first = await store.alert_changes(after=everything[0].seq, tenant_id=None, limit=1)
    assert [c.alert.campaign_id for c in after_first] == ["c2"]
    assert await store.alert_changes(after=first, tenant_id=None) == []


async def test_last_cdr_received_moves_with_live_stats_only(store, clock):
    live = window("c1", "cumulative", T0, T0 + MINUTE, tenant="a", attempts=3)
    await apply_messages(store, [live])
    received = clock.now
    clock.now += timedelta(minutes=30)
    replayed = Message(*live[:3], [*live[3], ("cdrwatch-replay", b"1")])
    await apply_messages(store, [replayed])
    (campaign,) = (await store.list_campaigns(tenant_id="a")).items
    assert (campaign.last_cdr_received_at, campaign.feed) == (received, "stale")


def dead_letter(call_id: str, campaign: str, tenant: str = "default") -> Message:
    """A too-late dead letter as the detector writes it (services/detector/app.py)."""
    envelope = {
        "reason": "too_late",
        "stage": "cdr",
        "detail": "more than 7 days before the newest call",
        "source": {"topic": "cdrwatch.cdrs.v1", "partition": 0, "offset": 1},
        "record": {"call_id": call_id, "campaign_id": campaign, "tenant_id": tenant},
    }
    return Message("cdrwatch.cdrs.dlq.v1", b"too_late", orjson.dumps(envelope))


async def test_rejections_count_first_and_last_seen_and_the_first_distinct_call_ids(store, clock):
    start = clock.now
    await apply_messages(store, [dead_letter(f"k{i}", "spring") for i in range(4)])
    clock.now = start + timedelta(minutes=5)
    await apply_messages(
        store,
        [dead_letter("k1", "spring"), *(dead_letter(f"m{i}", "spring") for i in range(4))],
    )
    await apply_messages(store, [dead_letter("z", "spring", tenant="acme")])
    [row] = await store.list_rejections(tenant_id=None, campaign_id="spring")
    assert (row.stage, row.reason, row.count) == ("cdr", "too_late", 9)
    assert (row.first_seen_at, row.last_seen_at) == (start, start + timedelta(minutes=5))
    assert row.example_call_ids == ["k0", "k1", "k2", "k3", "m0"][:REJECTION_EXAMPLES]
    [acme] = await store.list_rejections(tenant_id="acme", campaign_id="spring")
    assert (acme.count, acme.example_call_ids) == (1, ["z"])
