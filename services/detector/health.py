"""The detector's HTTP port: `/metrics` (Prometheus), `/healthz` and `/readyz`.

Served by aiohttp inside the worker's event loop (faust already depends on it) on
`metrics_host:metrics_port`, so readiness reads the worker's own state: 503 while the
broker does not answer (probed in the background like the api and ingest do), while the
stack recovers (the embedded broker restarted and the archive is replayed), while the
group rebalances or the tables recover, and until the campaign settings were read.
No auth: the port is loopback-only unless a container sets `metrics_host` (SPEC "Metrics":
the detector's series carry campaign ids of every tenant, so keep that port internal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass(frozen=True, slots=True)
class Readiness:
    broker: str  # ok | unreachable | recovering
    worker: str  # ok | starting | rebalancing | recovering-tables
    settings: str  # ok | loading

    @property
    def ready(self) -> bool:
        return self.broker == "ok" and self.worker == "ok" and self.settings == "ok"


class DetectorHttp:
    """One small server; `readiness` is called on each `/readyz`."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Callable[[], Readiness],
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._readiness = readiness
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def _readyz(self, _request: web.Request) -> web.Response:
        state = self._readiness()
        return _json(asdict(state), 200 if state.ready else 503)


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
