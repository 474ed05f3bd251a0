"""Traced calls in the api store (cdrwatch.calls.v1 -> GET /v1/calls), fed through the
consumer's own apply function. SQLite here; the same tests run against PostgreSQL in
tests/integration/test_api_store_postgres.py."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from schemas import topics
from services.api.consumer import Message, apply_messages, calls_message, parse_messages
from services.api.store import AlertStore, InvalidCursor
from services.common.db import calls as calls_table
from services.common.db import create_engine, migrate

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


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


def silent(call_id: str, at: datetime = T0, **extra: object) -> dict[str, object]:
    """A silent call as the detector's main stage traces it."""
    return {
        "call_id": call_id,
        "originated_at": at.isoformat(),
        "answered_at": (at + 10 * SECOND).isoformat(),
        "agent_connected_at": None,
        "ended_at": (at + 12 * SECOND).isoformat(),
        "outcome": "silent",
        "dial_mode": "predictive",
        "callee_key": "k" * 16,
        "rule_hits": [],
        **extra,
    }


def answered(call_id: str, at: datetime = T0, **extra: object) -> dict[str, object]:
    return {
        **silent(call_id, at),
        "agent_connected_at": (at + 15 * SECOND).isoformat(),
        "ended_at": (at + 60 * SECOND).isoformat(),
        "outcome": "answered",
        **extra,
    }


def hit(call_id: str, rule: str, at: datetime = T0) -> dict[str, object]:
    """A lockout hit as the lockout stage traces it: only what it knows."""
    return {"call_id": call_id, "originated_at": at.isoformat(), "rule_hits": [rule]}


async def test_a_traced_call_is_listed_with_its_times_outcome_and_pseudonym(store) -> None:
    await apply_messages(
        store, [calls_message("c1", "t1", [silent("s1", rule_hits=["it-silent-release"])])]
    )
    page = await store.list_calls(tenant_id="t1")
    assert page.next_cursor is None
    [call] = page.items
    assert call.model_dump(mode="json") == {
        "tenant_id": "t1",
        "campaign_id": "c1",
        "call_id": "s1",
        "originated_at": "2026-03-02T10:00:00Z",
        "answered_at": "2026-03-02T10:00:10Z",
        "agent_connected_at": None,
        "ended_at": "2026-03-02T10:00:12Z",
        "outcome": "silent",
        "dial_mode": "predictive",
        "callee_key": "k" * 16,
        "rule_hits": ["it-silent-release"],
    }


async def test_lockout_hits_merge_into_the_call_in_any_order_and_repetition(store) -> None:
    """Main-stage facts and lockout-stage hits of one call make one row, whatever their
    order; replays and repeats change nothing."""
    full = calls_message("c1", "t1", [answered("a1", rule_hits=["it-long-silent-wait"])])
    lockout = calls_message("c1", "t1", [hit("a1", "it-silent-lockout")])
    next_call = calls_message("c1", "t1", [hit("a1", "it-silent-next-call")], replayed=True)
    messages = [full, lockout, next_call]
    expected = None
    for order in itertools.permutations(messages):
        await apply_messages(store, [*order, *order])
        [call] = (await store.list_calls(tenant_id="t1")).items
        assert call.outcome == "answered"
        assert call.agent_connected_at == T0 + 15 * SECOND
        assert call.rule_hits == ["it-long-silent-wait", "it-silent-lockout", "it-silent-next-call"]
        expected = expected or call
        assert call == expected


async def test_facts_arriving_in_separate_batches_merge_into_the_stored_row(store) -> None:
    """The lockout stage's hit comes in a later consumer batch than the main stage's facts
    (or an earlier one): the stored row is completed, never replaced."""
    full = calls_message("c1", "t1", [answered("a1", rule_hits=["it-long-silent-wait"])])
    lockout = calls_message("c1", "t1", [hit("a1", "it-silent-lockout")])
    rows = []
    for first, second in ((full, lockout), (lockout, full)):
        async with store.engine.begin() as conn:
            await conn.execute(sa.delete(calls_table))
        await apply_messages(store, [first])
        await apply_messages(store, [second])
        await apply_messages(store, [second, first])  # repeated: no change
        [call] = (await store.list_calls(tenant_id="t1")).items
        rows.append(call)
    assert rows[0] == rows[1]
    assert rows[0].outcome == "answered"
    assert rows[0].ended_at == T0 + 60 * SECOND
    assert rows[0].rule_hits == ["it-long-silent-wait", "it-silent-lockout"]


async def test_a_call_known_only_by_its_lockout_hit_is_listed_without_outcome(store) -> None:
    await apply_messages(store, [calls_message("c1", "t1", [hit("x1", "it-silent-lockout")])])
    [call] = (await store.list_calls(tenant_id="t1")).items
    assert (call.outcome, call.ended_at, call.rule_hits) == (None, None, ["it-silent-lockout"])
    assert (await store.list_calls(tenant_id="t1", outcome="silent")).items == []


async def test_filters_outcome_campaign_range_and_tenant(store) -> None:
    await apply_messages(
        store,
        [
            calls_message("c1", "t1", [silent("s1", T0), answered("a1", T0 + SECOND)]),
            calls_message("c1", "t1", [silent("s2", T0 + 2 * SECOND)]),
            calls_message("c2", "t1", [silent("s3", T0 + 3 * SECOND)]),
            calls_message("c1", "t2", [silent("s1", T0)]),  # same ids, another tenant
        ],
    )

    async def ids(**filters: object) -> list[tuple[str, str, str]]:
        page = await store.list_calls(**filters)
        return [(c.tenant_id, c.campaign_id, c.call_id) for c in page.items]

    assert await ids(tenant_id="t1", outcome="silent", campaign_id="c1") == [
        ("t1", "c1", "s2"),
        ("t1", "c1", "s1"),
    ]
    assert await ids(tenant_id="t1", start=T0 + SECOND, end=T0 + 3 * SECOND) == [
        ("t1", "c1", "s2"),
        ("t1", "c1", "a1"),
    ]
    assert await ids(tenant_id="t2") == [("t2", "c1", "s1")]
    assert await ids(tenant_id=None, campaign_id="c1", outcome="silent") == [
        ("t1", "c1", "s2"),
        ("t2", "c1", "s1"),
        ("t1", "c1", "s1"),
    ]
    assert await ids(tenant_id="t3") == []


async def test_paging_returns_every_call_once_in_order(store) -> None:
    """Ties on originated_at across tenants and campaigns page exactly once each."""
    rng = random.Random(7)
    expected = []
    messages = []
    for tenant, campaign in itertools.product(("t1", "t2"), ("c1", "c2")):
        bodies = [silent(f"s{i}", T0 + rng.randrange(4) * SECOND) for i in range(30)]
        messages.append(calls_message(campaign, tenant, bodies))
        expected += [
            (datetime.fromisoformat(str(b["originated_at"])), tenant, campaign, str(b["call_id"]))
            for b in bodies
        ]
    await apply_messages(store, messages)
    seen = []
    cursor = None
    for _ in range(50):
        page = await store.list_calls(tenant_id=None, cursor=cursor, limit=7)
        seen += [(c.originated_at, c.tenant_id, c.campaign_id, c.call_id) for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(expected, reverse=True)


async def test_a_foreign_cursor_is_refused(store) -> None:
    for cursor in ("garbage", "WyJhIiwiYiJd", "WyJ4IiwiYSIsImIiLCJjIl0"):
        with pytest.raises(InvalidCursor):
            await store.list_calls(tenant_id=None, cursor=cursor)


async def test_calls_older_than_the_retention_behind_their_campaign_are_purged(store) -> None:
    """Event time, like minute buckets: a campaign that stopped keeps its calls."""
    old, new = T0 - timedelta(days=731), T0
    await apply_messages(
        store,
        [
            calls_message("c1", "t1", [silent("old", old), silent("new", new)]),
            calls_message("c2", "t1", [silent("alone", old)]),
        ],
    )
    assert await store.purge_calls_older_than(timedelta(days=730)) == 1
    page = await store.list_calls(tenant_id="t1")
    assert [c.call_id for c in page.items] == ["new", "alone"]


def test_unreadable_call_messages_are_skipped() -> None:
    skipped: list[str] = []
    bad = [
        Message(topics.CALLS, b"c1", b"not json"),
        Message(topics.CALLS, b"c1", b'{"campaign_id": "c1", "tenant_id": "t1", "calls": []}'),
        Message(
            topics.CALLS,
            b"c1",
            b'{"campaign_id": "c\\u0000", "tenant_id": "t1", "calls": [{"call_id": "x",'
            b' "originated_at": "2026-03-02T10:00:00Z"}]}',
        ),
    ]
    batch = parse_messages(bad, skipped=skipped.append)
    assert batch.calls == []
    assert skipped == [topics.CALLS] * 3
