"""GET /v1/calls over HTTP, in process: temp SQLite, no broker (consumer off), the traced
calls fed through the consumer's own apply function (IT-SC-1: every silent call is
traced, with its times, rule hits and pseudonymised callee)."""

from __future__ import annotations

import base64
from datetime import timedelta

import orjson
import pytest

from services.api.consumer import calls_message
from tests.service.test_api_routes import T0, api  # noqa: F401 - the fixture
from tests.service.test_api_store_calls import answered, hit, silent

SECOND = timedelta(seconds=1)
RAW_NUMBER = "+393331234567"


async def feed(api, *messages) -> None:  # noqa: F811
    await api.feed(*messages)


async def get(api, token: dict[str, str], **params: object):  # noqa: F811
    return await api.client.get("/v1/calls", params=params, headers=token)


async def test_silent_calls_are_listed_with_times_rule_hits_and_pseudonym(api):  # noqa: F811
    await feed(
        api,
        calls_message(
            "c1",
            "default",
            [
                silent("s1", T0, rule_hits=["it-silent-release"]),
                answered("a1", T0 + SECOND, rule_hits=["it-long-silent-wait"]),
            ],
        ),
        calls_message("c1", "default", [hit("s1", "it-silent-lockout")]),
    )
    response = await get(
        api,
        await api.token("viewer"),
        campaign_id="c1",
        outcome="silent",
        **{"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T11:00:00Z"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    [call] = body["items"]
    assert call == {
        "tenant_id": "default",
        "campaign_id": "c1",
        "call_id": "s1",
        "originated_at": "2026-03-02T10:00:00Z",
        "answered_at": "2026-03-02T10:00:10Z",
        "agent_connected_at": None,
        "ended_at": "2026-03-02T10:00:12Z",
        "outcome": "silent",
        "dial_mode": "predictive",
        "callee_key": "k" * 16,
        "rule_hits": ["it-silent-lockout", "it-silent-release"],
    }


async def test_calls_page_with_a_cursor(api):  # noqa: F811
    await feed(
        api,
        calls_message("c1", "default", [silent(f"s{i:02}", T0 + i * SECOND) for i in range(25)]),
    )
    viewer = await api.token("viewer")
    seen, cursor = [], None
    for _ in range(10):
        params = {"outcome": "silent", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = (await get(api, viewer, **params)).json()
        seen += [c["call_id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"s{i:02}" for i in reversed(range(25))]


async def test_a_tenant_sees_only_its_calls(api):  # noqa: F811
    await feed(
        api,
        calls_message("c1", "acme", [silent("secret-acme-call", T0)]),
        calls_message("c1", "globex", [silent("globex-call", T0)]),
    )
    globex = await api.token("viewer", "globex")
    for params in ({}, {"campaign_id": "c1"}, {"tenant": "globex"}):
        body = (await get(api, globex, **params)).json()
        assert [c["call_id"] for c in body["items"]] == ["globex-call"]
    other = await get(api, globex, tenant="acme")
    assert other.status_code == 200
    assert other.json()["items"] == []
    assert "secret-acme-call" not in other.text
    unbound = (await get(api, await api.token("viewer"))).json()
    assert {(c["tenant_id"], c["call_id"]) for c in unbound["items"]} == {
        ("acme", "secret-acme-call"),
        ("globex", "globex-call"),
    }
    only_acme = (await get(api, await api.token("viewer"), tenant="acme")).json()
    assert [c["call_id"] for c in only_acme["items"]] == ["secret-acme-call"]


@pytest.mark.parametrize(
    ("role", "status"), [(None, 401), ("bogus", 401), ("ingest", 403), ("viewer", 200)]
)
async def test_calls_need_a_viewer_token(api, role, status):  # noqa: F811
    await feed(api, calls_message("c1", "default", [silent("secret-call", T0)]))
    if role is None:
        headers = {}
    elif role == "bogus":
        headers = {"Authorization": "Bearer cdrw_not-a-token"}
    else:
        headers = await api.token(role)
    response = await get(api, headers)
    assert response.status_code == status
    if status != 200:
        assert "secret-call" not in response.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"outcome": "loud"}, "outcome"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-02T10:00:00"}, "from"),
        ({"from": "1999-12-31T23:59:59Z"}, "from"),
        ({"from": "0001-01-01T00:30:00+01:00"}, "from"),
        ({"to": "9999-12-31T23:30:00-01:00"}, "to"),
        ({"from": "2026-03-02T11:00:00Z", "to": "2026-03-02T10:00:00Z"}, "from"),
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T10:00:00Z"}, "from"),
        ({"campaign_id": "bad\x1bid"}, "campaign_id"),
        ({"campaign_id": "a/b"}, "campaign_id"),
        ({"campaign_id": "x" * 129}, "campaign_id"),
        ({"tenant": "a/b"}, "tenant"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
    ],
    ids=[
        "unknown-outcome",
        "from-not-a-time",
        "from-no-offset",
        "from-before-2000",
        "from-overflowing",
        "to-overflowing",
        "inverted",
        "empty",
        "campaign-control-char",
        "campaign-slash",
        "campaign-too-long",
        "tenant-slash",
        "limit-0",
        "limit-1001",
        "cursor-garbage",
    ],
)
async def test_bad_parameters_are_422_naming_them(api, params, field):  # noqa: F811
    response = await get(api, await api.token("viewer"), **params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


@pytest.mark.parametrize(
    "values",
    [["0001-01-01T00:30:00+01:00", "t", "c", "x"], ["a", "b", "c"], [1, 2, 3, 4]],
    ids=["overflowing-instant", "three-values", "numbers"],
)
async def test_forged_cursors_are_422(api, values):  # noqa: F811
    cursor = base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")
    response = await get(api, await api.token("viewer"), cursor=cursor)
    assert response.status_code == 422, response.text


async def test_every_outcome_of_the_core_is_a_valid_filter(api):  # noqa: F811
    from services.detector.core.model import CALL_OUTCOMES

    viewer = await api.token("viewer")
    for outcome in CALL_OUTCOMES:
        assert (await get(api, viewer, outcome=outcome)).status_code == 200


async def test_the_raw_number_never_reaches_the_answer(api):  # noqa: F811
    """The wire model has no field for a number: a message carrying one is refused, and
    the answers hold the pseudonym only."""
    body = {**silent("s1", T0), "callee_number": RAW_NUMBER}
    await feed(api, calls_message("c1", "default", [silent("s2", T0)]))
    with pytest.raises(ValueError, match="callee_number"):
        calls_message("c1", "default", [body])
    response = await get(api, await api.token("viewer"))
    assert RAW_NUMBER not in response.text
    assert response.json()["items"][0]["callee_key"] == "k" * 16
