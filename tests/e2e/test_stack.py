"""End to end: CDRs posted over HTTP to the running stack come back as exact stats and
alerts through the API; duplicates count once; bad bodies get clear errors; a detector
killed with SIGKILL mid-stream is restarted and the figures end exact."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from schemas.stats_v1 import COUNT_FIELDS
from tests.e2e.conftest import Stack
from tests.helpers import WaitTimeout, wait_until

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday 10:00 in Rome: inside calling hours
EMPTY_COUNTS = dict.fromkeys(COUNT_FIELDS, 0)


def dialer_cdr(campaign: str, n: int, kind: str, at: datetime) -> dict[str, Any]:
    """A CDR as a dialer sends it (raw number, local offset)."""
    rome = at.astimezone(ZoneInfo("Europe/Rome"))  # dialers send local offsets
    cdr: dict[str, Any] = {
        "call_id": f"{campaign}-{n}",
        "campaign_id": campaign,
        "callee_number": f"+39347{n:07d}",
        "originated_at": rome.isoformat(),
        "ringing_at": (at + timedelta(seconds=1)).isoformat(),
    }
    answered = at + timedelta(seconds=8)
    if kind == "short_ring":
        cdr.update(ended_at=(at + timedelta(seconds=10)).isoformat(), hangup_side="system")
        return cdr
    if kind == "no_answer":
        cdr.update(ended_at=(at + timedelta(seconds=30)).isoformat(), hangup_side="system")
        return cdr
    cdr["answered_at"] = answered.isoformat()
    cdr["ended_at"] = (answered + timedelta(seconds=120)).isoformat()
    if kind == "machine":
        cdr["amd_result"] = "machine"
    elif kind == "silent":
        cdr.update(amd_result="human", ended_at=(answered + timedelta(seconds=2)).isoformat())
    elif kind == "late":
        cdr.update(
            amd_result="human", agent_connected_at=(answered + timedelta(seconds=2.5)).isoformat()
        )
    elif kind == "edge":  # exactly 2.000 s: connected in time, not abandoned
        cdr.update(
            amd_result="notsure", agent_connected_at=(answered + timedelta(seconds=2)).isoformat()
        )
    else:
        cdr.update(
            amd_result="human", agent_connected_at=(answered + timedelta(seconds=1)).isoformat()
        )
    return cdr


def scenario(campaign: str) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """120 calls over minutes 0..11 after T0: the whole range and minutes [0, 2) by hand."""
    kinds = (
        ["silent"] * 6
        + ["late"] * 4
        + ["edge"] * 2
        + ["connected"] * 98
        + ["machine"] * 5
        + ["short_ring"] * 3
        + ["no_answer"] * 2
    )
    cdrs = [
        dialer_cdr(campaign, i, kind, T0 + timedelta(seconds=6 * i)) for i, kind in enumerate(kinds)
    ]
    whole = dict(
        EMPTY_COUNTS,
        attempts=120,
        answered=115,
        answered_by_person=110,
        amd_machine=5,
        silent=6,
        abandoned=10,
        out_of_hours=0,
        short_ring=3,
    )
    # Minutes [0, 2) hold calls 0..19: 6 silent, 4 late, 2 edge, 8 connected.
    first_two = dict(
        EMPTY_COUNTS, attempts=20, answered=20, answered_by_person=20, silent=6, abandoned=10
    )
    return cdrs, whole, first_two


def iso_z(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def stats(stack: Stack, campaign: str, start: datetime, end: datetime) -> dict[str, Any] | None:
    with stack.client("viewer") as client:
        response = client.get(
            f"/v1/campaigns/{campaign}/stats", params={"from": iso_z(start), "to": iso_z(end)}
        )
    return response.json() if response.status_code == 200 else None


def counts_of(body: dict[str, Any] | None) -> dict[str, int] | None:
    return None if body is None else {k: body[k] for k in EMPTY_COUNTS}


def detector_metric(stack: Stack, name: str) -> float:
    text = httpx.get(stack.metrics_url, timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_posted_cdrs_give_exact_stats_and_a_violation_alert(stack: Stack) -> None:
    campaign = f"e2e-{uuid.uuid4().hex[:8]}"
    with stack.client("admin") as admin:
        put = admin.put(f"/v1/campaigns/{campaign}", json={"profile": "it"})
        assert put.status_code == 200, put.text
    cdrs, whole, first_two = scenario(campaign)
    with stack.client("ingest") as ingest:
        response = ingest.post("/v1/cdrs", json=cdrs)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 120, "duplicates": 0, "rejected": []}

    end = T0 + timedelta(minutes=12)
    body = wait_until(
        lambda: (b := stats(stack, campaign, T0, end)) and counts_of(b) == whole and b,
        timeout=60,
        interval=0.2,
        message="stats never matched the hand-computed counts",
    )
    assert body["silent_rate"] == pytest.approx(6 / 110)
    assert body["abandoned_rate"] == pytest.approx(10 / 110)
    assert body["out_of_hours_rate"] == 0.0
    assert counts_of(stats(stack, campaign, T0, T0 + timedelta(minutes=2))) == first_two
    empty = stats(stack, campaign, T0 - timedelta(hours=1), T0)
    assert counts_of(empty) == EMPTY_COUNTS and empty["silent_rate"] is None

    def violation() -> dict[str, Any] | None:
        with stack.client("viewer") as viewer:
            items = viewer.get(
                "/v1/alerts", params={"campaign_id": campaign, "rule": "it-silent-rate-cumulative"}
            ).json()["items"]
        return next((a for a in items if a["numerator"] == 6 and a["denominator"] == 110), None)

    alert = wait_until(violation, timeout=30, interval=0.2, message="no violation alert")
    assert alert["severity"] == "violation" and alert["state"] == "firing"
    assert alert["threshold"] == 0.03 and alert["profile"] == "it"
    assert sorted(alert["evidence"]["call_ids"]) == sorted(f"{campaign}-{i}" for i in range(6))


def test_the_same_batch_posted_twice_counts_once(stack: Stack) -> None:
    campaign = f"e2e-dup-{uuid.uuid4().hex[:8]}"
    cdrs, whole, _ = scenario(campaign)
    ndjson = b"\n".join(orjson.dumps(c) for c in cdrs)
    with stack.client("ingest", stack.ingest_url) as ingest:
        assert ingest.post("/v1/cdrs", json=cdrs).status_code == 202
        end = T0 + timedelta(minutes=12)
        wait_until(lambda: counts_of(stats(stack, campaign, T0, end)) == whole, timeout=60)
        duplicates_before = detector_metric(stack, "cdrwatch_cdrs_duplicate_total")
        again = ingest.post(
            "/v1/cdrs", content=ndjson, headers={"Content-Type": "application/x-ndjson"}
        )
    assert again.status_code == 202 and again.json()["accepted"] == 120
    wait_until(
        lambda: detector_metric(stack, "cdrwatch_cdrs_duplicate_total") >= duplicates_before + 120,
        timeout=60,
        message="the detector never saw the second copies",
    )
    assert counts_of(stats(stack, campaign, T0, T0 + timedelta(minutes=12))) == whole


def test_bad_bodies_get_clear_errors_and_good_records_are_kept(stack: Stack) -> None:
    campaign = f"e2e-bad-{uuid.uuid4().hex[:8]}"
    good = dialer_cdr(campaign, 1, "connected", T0)
    backwards = dict(dialer_cdr(campaign, 2, "connected", T0), ended_at=iso_z(T0 - timedelta(1)))
    no_campaign = {
        k: v for k, v in dialer_cdr(campaign, 3, "connected", T0).items() if k != "campaign_id"
    }
    with stack.client("ingest") as ingest:
        mixed = ingest.post("/v1/cdrs", json=[good, backwards, no_campaign])
        assert mixed.status_code == 202
        body = mixed.json()
        assert body["accepted"] == 1
        rejected = {r["index"]: r for r in body["rejected"]}
        assert rejected[1]["call_id"] == f"{campaign}-2"
        assert any(
            e["field"] == "ended_at" and "before" in e["message"] for e in rejected[1]["errors"]
        )
        assert any(e["field"] == "campaign_id" for e in rejected[2]["errors"])

        all_bad = ingest.post("/v1/cdrs", json=[backwards])
        assert all_bad.status_code == 422 and all_bad.json()["accepted"] == 0

        too_many = ingest.post("/v1/cdrs", json=[good] * 10_001)
        assert too_many.status_code == 413

        not_json = ingest.post(
            "/v1/cdrs", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400

    assert httpx.post(f"{stack.api_url}/v1/cdrs", json=[good]).status_code == 401
    with stack.client("viewer") as viewer:
        forbidden = viewer.post("/v1/cdrs", json=[good])
        assert forbidden.status_code == 403 and "accepted" not in forbidden.text
    assert httpx.get(f"{stack.api_url}/v1/alerts").status_code == 401
    assert httpx.get(f"{stack.api_url}/healthz").status_code == 200


def test_metrics_pass_promtool(stack: Stack) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make system-deps` (Debian package prometheus)"
    # The api's /metrics names campaigns: it needs a viewer token (the others do not).
    assert httpx.get(f"{stack.api_url}/metrics", timeout=10).status_code == 401
    viewer = {"Authorization": f"Bearer {stack.tokens['viewer']}"}
    for url in (f"{stack.api_url}/metrics", f"{stack.ingest_url}/metrics", stack.metrics_url):
        text = httpx.get(url, timeout=10, headers=viewer).text
        assert "cdrwatch_" in text
        result = subprocess.run(  # noqa: S603 - a fixed tool on our own output
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{url}: {result.stdout}{result.stderr}"


def test_detector_killed_with_sigkill_mid_stream_ends_exact(stack: Stack) -> None:
    campaign = f"e2e-kill-{uuid.uuid4().hex[:8]}"
    kinds = ["connected"] * 90 + ["silent"] * 5 + ["late"] * 2 + ["machine"] * 3
    cdrs = [
        dialer_cdr(campaign, i, kinds[i % len(kinds)], T0 + timedelta(seconds=i % 3000))
        for i in range(20_000)
    ]
    batches = [cdrs[i : i + 1000] for i in range(0, len(cdrs), 1000)]
    old_pid = stack.pid("detector")
    posted = threading.Event()
    errors: list[str] = []

    def post_all() -> None:
        with stack.client("ingest", stack.ingest_url) as ingest:
            for batch in batches:
                response = ingest.post("/v1/cdrs", json=batch)
                if response.status_code != 202:
                    errors.append(response.text)
        posted.set()

    poster = threading.Thread(target=post_all)
    poster.start()
    end = T0 + timedelta(minutes=60)
    wait_until(
        lambda: (counts_of(stats(stack, campaign, T0, end)) or {}).get("attempts", 0) >= 2000,
        timeout=60,
        message="the detector never started on the stream",
    )
    os.kill(old_pid, signal.SIGKILL)
    poster.join(240)
    assert posted.is_set() and not errors, errors
    wait_until(lambda: stack.pid("detector") != old_pid, timeout=30, message="no restart")

    expected = dict(
        EMPTY_COUNTS,
        attempts=20_000,
        answered=20_000,
        answered_by_person=19_400,
        amd_machine=600,
        silent=1000,
        abandoned=1400,
    )
    wait_until(
        lambda: counts_of(stats(stack, campaign, T0, end)) == expected,
        timeout=240,
        interval=0.5,
        message="counts after the restart are not exact",
    )

    def cumulative_alerts() -> list[dict[str, Any]]:
        with stack.client("viewer") as viewer:
            return viewer.get(
                "/v1/alerts", params={"campaign_id": campaign, "rule": "it-silent-rate-cumulative"}
            ).json()["items"]

    # An alert's latest figures follow the stats by up to about two seconds (one figures
    # update per alert and second, services/detector/pacing.py).
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: [a["numerator"] for a in cumulative_alerts()] == [1000], timeout=15)
    items = cumulative_alerts()
    assert len(items) == 1 and items[0]["numerator"] == 1000, items


def test_a_campaign_override_set_with_put_changes_the_verdict(stack: Stack) -> None:
    campaign = f"e2e-override-{uuid.uuid4().hex[:8]}"
    with stack.client("admin") as admin:
        put = admin.put(
            f"/v1/campaigns/{campaign}",
            json={"profile": "it", "overrides": {"silent_rate_max": "0.06"}},
        )
        assert put.status_code == 200, put.text
        refused = admin.put(f"/v1/campaigns/{campaign}", json={"overrides": {"nope": 1}})
        assert refused.status_code == 422 and "nope" in refused.text
    cdrs, whole, _ = scenario(campaign)  # 6 silent / 110: 5.45 %, above 3 % but below 6 %
    with stack.client("ingest") as ingest:
        assert ingest.post("/v1/cdrs", json=cdrs).status_code == 202

    def cumulative_alert() -> dict[str, Any] | None:
        with stack.client("viewer") as viewer:
            items = viewer.get(
                "/v1/alerts", params={"campaign_id": campaign, "rule": "it-silent-rate-cumulative"}
            ).json()["items"]
        return next((a for a in items if a["denominator"] == 110), None)

    alert = wait_until(cumulative_alert, timeout=60, interval=0.2, message="no alert")
    assert alert["severity"] == "warning"  # 5.45 % >= 80 % of 6 %, not above 6 %
    assert alert["threshold"] == 0.06


def test_the_data_dir_is_owner_only(stack: Stack) -> None:
    """CONTRACT decision 8: after `cdrwatch up`, every directory of the data dir is 0700 and
    every file (database, logs, pid files, pseudonym key, detector data) 0600 or tighter."""
    entries = [stack.data_dir, *stack.data_dir.rglob("*")]
    assert any(p.name == "cdrwatch.db" for p in entries)
    assert any(p.suffix == ".log" for p in entries)
    for path in entries:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        else:
            assert mode & 0o077 == 0, (path, oct(mode))
