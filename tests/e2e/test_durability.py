"""Durability of the embedded stack, as `cdrwatch up` runs it (issue 6 items 3 and 4):

(a) kill -9 of the memory-only broker: ingest answers 503 + Retry-After within 1 s and its
    /readyz is 503; `up` restarts the broker, replays the archive, and every CDR accepted
    before is counted exactly once afterwards; new CDRs are accepted again.
(b) Ctrl-C and start again on the same data directory: tokens, campaign settings, alerts
    with their history, acknowledgements and notes, webhooks with their deliveries, and
    stats answer identically; a webhook receiver got every alert change once, signed, and
    nothing again after the restart.

Each test runs a stack of its own (it kills or restarts it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api.webhooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature
from services.common.broker import free_port
from tests.e2e.conftest import _alive, _pids, _read_banner
from tests.helpers import wait_until
from tests.stack import ROOT

pytestmark = pytest.mark.e2e

CAMPAIGN = "durable"
BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
RANGE = {
    "from": (BASE - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "to": (BASE + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
}


class UpProcess:
    """One `cdrwatch up` on a data directory; the URLs and tokens of its banner."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
        self.proc = subprocess.Popen(  # noqa: S603 - the project's own command
            [
                sys.executable,
                "-m",
                "services.cli",
                "up",
                "--api-port",
                str(free_port()),
                "--ingest-port",
                str(free_port()),
                "--data-dir",
                str(data_dir),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            banner = _read_banner(self.proc, timeout=120)
        except BaseException:
            self.stop()
            raise
        self.tokens = dict(
            re.findall(r"^\s{4}(admin|compliance|viewer|ingest)\s+(\S+)$", banner, re.M)
        )
        api = re.search(r"API and dashboard: (\S+)", banner)
        ingest = re.search(r"Ingest \(POST /v1/cdrs, also served by the API\): (\S+)", banner)
        assert api and ingest and len(self.tokens) == 4, banner
        self.api_url, self.ingest_url = api[1], ingest[1]

    def client(self, role: str, base: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base or self.api_url,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=30,
        )

    def pid(self, service: str) -> int:
        return int((self.data_dir / "run" / f"{service}.pid").read_text())

    def stop(self, sig: int = signal.SIGINT) -> int:
        children = _pids(self.data_dir / "run")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left = [pid for pid in children | _pids(self.data_dir / "run") if _alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"cdrwatch up left processes behind: {left}"
        return self.proc.returncode


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def stacks(data_dir: Path) -> Iterator[list[UpProcess]]:
    started: list[UpProcess] = []
    yield started
    for stack in started:
        if stack.proc.poll() is None:
            stack.stop()


def cdrs(first: int, count: int, *, silent_every: int = 3) -> list[dict[str, Any]]:
    records = []
    for n in range(first, first + count):
        originated = BASE + timedelta(seconds=7 * (n % 900))
        record: dict[str, Any] = {
            "call_id": f"call-{n}",
            "campaign_id": CAMPAIGN,
            "callee_number": f"+39347{1_000_000 + n}",
            "originated_at": originated.isoformat(),
            "answered_at": (originated + timedelta(seconds=5)).isoformat(),
            "ended_at": (originated + timedelta(seconds=60)).isoformat(),
        }
        if n % silent_every:
            record["agent_connected_at"] = (originated + timedelta(seconds=6)).isoformat()
        records.append(record)
    return records


def attempts(viewer: httpx.Client) -> int:
    response = viewer.get(f"/v1/campaigns/{CAMPAIGN}/stats", params=RANGE)
    return int(response.json()["attempts"]) if response.status_code == 200 else -1


def test_kill_9_of_the_broker_is_survived_with_every_accepted_cdr_counted_once(
    data_dir: Path, stacks: list[UpProcess]
) -> None:
    stack = UpProcess(data_dir)
    stacks.append(stack)
    with stack.client("ingest", stack.ingest_url) as ingest, stack.client("viewer") as viewer:
        for first in (0, 200, 400):
            posted = ingest.post("/v1/cdrs", json=cdrs(first, 200))
            assert posted.status_code == 202, posted.text
        assert ingest.post("/v1/cdrs", json=cdrs(100, 50)).status_code == 202  # repeats
        wait_until(lambda: attempts(viewer) == 600, timeout=60, ignore=(httpx.HTTPError,))

        # Hold the supervisor while the broker is dead, so the outage is observable.
        stack.proc.send_signal(signal.SIGSTOP)
        try:
            os.kill(stack.pid("broker"), signal.SIGKILL)
            for attempt in range(3):
                started = time.monotonic()
                refused = ingest.post("/v1/cdrs", json=cdrs(10_000 + attempt, 5))
                elapsed = time.monotonic() - started
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"]
                assert elapsed <= 1.0
            assert ingest.get("/readyz").status_code == 503
            with stack.client("viewer") as api:
                wait_until(lambda: api.get("/readyz").status_code == 503, timeout=3)
        finally:
            stack.proc.send_signal(signal.SIGCONT)
        seen: list[int] = []

        def readyz_recovered() -> bool:
            seen.append(ingest.get("/readyz").status_code)
            return seen[-1] == 200

        wait_until(readyz_recovered, timeout=60, interval=0.05, ignore=(httpx.HTTPError,))

        # The restarted broker got the archive; the rebuilt figures are exact, not merged.
        wait_until(lambda: attempts(viewer) == 600, timeout=90, ignore=(httpx.HTTPError,))
        posted = ingest.post("/v1/cdrs", json=cdrs(600, 100))
        assert posted.status_code == 202, posted.text
        wait_until(lambda: attempts(viewer) == 700, timeout=60, ignore=(httpx.HTTPError,))
        time.sleep(1.0)  # nothing counted late, nothing twice
        assert attempts(viewer) == 700
    assert stack.stop() == 0


def snapshot(stack: UpProcess) -> dict[str, Any]:
    """What a user sees: stats, campaigns, alerts and each alert with its history,
    webhooks and every delivery with its tries."""
    with stack.client("admin") as admin:
        alerts = admin.get("/v1/alerts").json()
        webhooks = admin.get("/v1/webhooks").json()
        return {
            "stats": admin.get(f"/v1/campaigns/{CAMPAIGN}/stats", params=RANGE).json(),
            "campaigns": admin.get("/v1/campaigns").json(),
            "alerts": alerts,
            "details": [admin.get(f"/v1/alerts/{a['id']}").json() for a in alerts["items"]],
            "webhooks": webhooks,
            "deliveries": [
                admin.get(f"/v1/webhooks/{w['id']}/deliveries", params={"limit": 1000}).json()
                for w in webhooks["items"]
            ],
        }


def quiet_snapshot(stack: UpProcess) -> dict[str, Any]:
    """The snapshot once two taken 2.5 s apart agree: an alert's last figures follow the
    stats by up to about two seconds (one figures update per alert and second, held until
    the next offset commit: services/detector/pacing.py)."""
    taken = [snapshot(stack)]

    def unchanged() -> bool:
        time.sleep(2.5)
        taken.append(snapshot(stack))
        return taken[-1] == taken[-2]

    wait_until(unchanged, timeout=30)
    return taken[-1]


class WebhookReceiver:
    """An HTTP receiver on 127.0.0.1 (a thread) that keeps every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def _settled(admin: httpx.Client, receiver: WebhookReceiver) -> bool:
    """Every history row of every alert delivered to the receiver and recorded so."""
    changes = sum(
        len(admin.get(f"/v1/alerts/{a['id']}").json()["history"])
        for a in admin.get("/v1/alerts").json()["items"]
    )
    [hook] = admin.get("/v1/webhooks").json()["items"]
    return changes > 0 and hook["deliveries"] == {"pending": 0, "delivered": changes, "dead": 0}


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths with both values (for a failure message)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            diff
            for key in sorted(set(before) | set(after))
            for diff in differences(before.get(key), after.get(key), f"{path}.{key}")
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) != len(after):
        named = [
            [f"{x.get('rule')}:{x.get('id')}" if isinstance(x, dict) else x for x in v]
            for v in (before, after)
        ]
        return [f"{path}: {named[0]} -> {named[1]}"]
    if isinstance(before, list) and isinstance(after, list):
        return [
            diff
            for index, (b, a) in enumerate(zip(before, after, strict=True))
            for diff in differences(b, a, f"{path}[{index}]")
        ]
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def test_a_restart_on_the_same_data_directory_loses_nothing(
    data_dir: Path, stacks: list[UpProcess], webhook_receiver: WebhookReceiver
) -> None:
    first = UpProcess(data_dir)
    stacks.append(first)
    with first.client("admin") as admin, first.client("ingest", first.ingest_url) as ingest:
        hook = admin.post("/v1/webhooks", json={"url": webhook_receiver.url})
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]
        configured = admin.put(
            f"/v1/campaigns/{CAMPAIGN}", json={"profile": "uk", "amd_false_positive_ratio": 0.1}
        )
        assert configured.status_code == 200, configured.text
        for start in (0, 150, 300):
            assert ingest.post("/v1/cdrs", json=cdrs(start, 150)).status_code == 202
        wait_until(lambda: attempts(admin) == 450, timeout=60, ignore=(httpx.HTTPError,))
        firing = wait_until(
            lambda: admin.get("/v1/alerts", params={"state": "firing"}).json()["items"],
            timeout=30,
        )
        acked = admin.post(f"/v1/alerts/{firing[0]['id']}/ack", json={"note": "called the BPO"})
        assert acked.status_code == 200, acked.text
        noted = admin.post(f"/v1/alerts/{firing[0]['id']}/notes", json={"note": "paced down"})
        assert noted.status_code == 200, noted.text
        wait_until(lambda: _settled(admin, webhook_receiver), timeout=30)
    before = quiet_snapshot(first)
    delivered_before = len(webhook_receiver.requests)
    tokens = dict(first.tokens)
    assert first.stop(signal.SIGINT) == 0

    second = UpProcess(data_dir)
    stacks.append(second)
    assert second.tokens == tokens
    with second.client("viewer") as viewer:
        wait_until(lambda: attempts(viewer) == 450, timeout=90, ignore=(httpx.HTTPError,))
    time.sleep(1.5)
    latest: list[dict[str, Any]] = []

    def identical() -> bool:
        latest[:] = [snapshot(second)]
        return latest[0] == before

    try:
        wait_until(identical, timeout=30, ignore=(httpx.HTTPError,))
    except AssertionError:
        pytest.fail(f"after the restart: {differences(before, latest[0])[:20]}")
    after = latest[0]
    assert after["campaigns"]["items"][0]["profile"] == "uk"
    assert any(a["ack_note"] == "called the BPO" for a in after["details"])
    # every alert change reached the receiver once, signed; none again after the restart
    keys = [headers[IDEMPOTENCY_HEADER] for headers, _ in webhook_receiver.requests]
    assert len(keys) == len(set(keys)) == delivered_before
    assert all(
        verify_signature(secret, headers[SIGNATURE_HEADER], body, time.time(), 3600)
        for headers, body in webhook_receiver.requests
    )
    events = {headers["X-Cdrwatch-Event"] for headers, _ in webhook_receiver.requests}
    assert {"opened", "acknowledged", "note"} <= events
    assert second.stop() == 0
