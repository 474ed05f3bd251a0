"""The detector's `/readyz` tells the truth (issue "Figures an auditor can trust", item 3):
503 until its group joined and its settings were read, 200 while it consumes, 503 as soon
as its broker stops answering; `/metrics` on the same port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from services.common.broker import EmbeddedBroker, free_port
from services.common.kafka import ensure_topics
from tests.helpers import wait_until
from tests.stack import ServiceProcess, service_env


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2.0)
    return response.status_code, orjson.loads(response.content)


async def test_readyz_follows_the_worker_and_its_broker(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    bootstrap = broker.start()
    port = free_port()
    proc = ServiceProcess(
        ["detector", "--metrics-port", str(port)],
        service_env(bootstrap, tmp_path / "data", CDRWATCH_SESSION_TIMEOUT_SECONDS="6"),
        tmp_path / "detector.log",
    )
    try:
        await ensure_topics(bootstrap, 2)
        proc.start()
        seen: list[tuple[int, dict[str, Any]]] = []

        def answer() -> tuple[int, dict[str, Any]]:
            seen.append(_readyz(port))
            return seen[-1]

        wait_until(
            lambda: answer()[0] == 200,
            timeout=60,
            interval=0.2,
            ignore=(httpx.TransportError,),
            message=f"detector never ready:\n{proc.log_tail()}",
        )
        assert seen[-1][1] == {"broker": "ok", "worker": "ok", "settings": "ok"}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
        assert metrics.status_code == 200
        assert "cdrwatch_" in metrics.text

        broker.stop()
        status, body = wait_until(
            lambda: (lambda r: r if r[0] == 503 else None)(_readyz(port)),
            timeout=15,
            interval=0.2,
            message=f"detector still ready with its broker gone:\n{proc.log_tail()}",
        )
        assert body["broker"] == "unreachable"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code == 200
    finally:
        proc.stop()
        broker.stop()
