"""The ingest FastAPI app: wiring of settings, publisher, token store, metrics and routes."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.archive import open_archive
from services.common.auth import TokenStore
from services.common.datadir import ensure_private_dir
from services.common.db import create_engine, migrate
from services.common.gc_tuning import tune_for_throughput
from services.common.http_app import harden_app, serve_app
from services.common.settings import IngestSettings
from services.ingest.dialers import load_format_mappings
from services.ingest.metrics import IngestMetrics
from services.ingest.normalize import Normalizer
from services.ingest.raw import RawValidator
from services.ingest.routes import router
from services.ingest.service import (
    ArchivingPublisher,
    IngestService,
    KafkaPublisher,
    Publisher,
    SupportsReadiness,
    build_publisher,
)

PSEUDONYM_KEY_FILE = "pseudonym.key"
MIN_PSEUDONYM_KEY_CHARS = 16


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_pseudonym_key(settings: IngestSettings) -> bytes:
    """The HMAC key for callee pseudonyms: the setting, else `data_dir/pseudonym.key`.

    The key is the UTF-8 bytes of the text (setting or file, stripped), so every process
    reading the same text gets the same pseudonyms. The file is created once, atomically
    (a 0600 temporary file hard-linked into place, so concurrent starters agree on one
    key), holding 32 random bytes in hex.
    """
    if settings.pseudonym_key is not None:
        key = settings.pseudonym_key.strip()
        if len(key) < MIN_PSEUDONYM_KEY_CHARS:
            raise ValueError(
                f"pseudonym_key must be at least {MIN_PSEUDONYM_KEY_CHARS} characters: "
                "phone numbers are few enough to brute-force a weak key"
            )
        return key.encode()
    ensure_private_dir(settings.data_dir)
    path = settings.data_dir / PSEUDONYM_KEY_FILE
    if not path.exists():
        _create_key_file(path)
    key = path.read_text().strip()
    if len(key) < MIN_PSEUDONYM_KEY_CHARS:
        raise ValueError(f"{path} holds no usable key; delete it to create a new one")
    return key.encode()


def _create_key_file(path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def create_app(
    settings: IngestSettings,
    publisher: Publisher | None = None,
    tokens: TokenStore | None = None,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """The ingest app. Without an injected publisher it produces to Kafka (started and
    stopped by the lifespan); without a token store it opens the database of the settings
    and migrates it. With `settings.consume_raw` the lifespan also runs the validator of
    `cdrwatch.cdrs.raw.v1` (services.ingest.raw), with the same normaliser and metrics."""
    registry = registry if registry is not None else CollectorRegistry()
    archive = open_archive(settings)
    kafka_publisher: KafkaPublisher | ArchivingPublisher | None = None
    if publisher is None:
        kafka_publisher = build_publisher(settings, archive)
        publisher = kafka_publisher
    engine: AsyncEngine | None = None
    if tokens is None:
        engine = create_engine(settings.resolved_database_url())
        tokens = TokenStore(engine)

    ingest_metrics = IngestMetrics(registry)
    normalizer = Normalizer(
        load_pseudonym_key(settings),
        clock,
        timedelta(seconds=settings.future_tolerance_seconds),
    )
    format_mappings = load_format_mappings(settings.format_mappings_dir)
    raw_validator = (
        RawValidator(
            settings, normalizer, ingest_metrics, archive=archive, mappings=format_mappings
        )
        if settings.consume_raw
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if engine is not None:
                if settings.database_url is None:
                    ensure_private_dir(settings.data_dir)
                stack.push_async_callback(engine.dispose)
                await migrate(engine)
            if kafka_publisher is not None:
                stack.push_async_callback(kafka_publisher.stop)
                await kafka_publisher.start()
            if archive is not None:
                stack.callback(archive.close)
            if raw_validator is not None:
                stack.push_async_callback(raw_validator.stop)
                await raw_validator.start()
            yield

    app = FastAPI(
        title="cdrwatch ingest", version="1", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.ingest = IngestService(settings, publisher, normalizer, ingest_metrics)
    app.state.raw_validator = raw_validator
    app.state.format_mappings = format_mappings
    app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        service: IngestService = request.app.state.ingest
        publisher = service.publisher
        ready = not isinstance(publisher, SupportsReadiness) or await publisher.check_ready()
        database = "ok"
        if engine is not None:
            try:
                async with engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
            except (SQLAlchemyError, OSError):
                database = "unreachable"
                ready = False
        # The raw validator is reported, not required: the HTTP path does not depend on it,
        # and its group join may take a session timeout after a restart.
        validator: RawValidator | None = request.app.state.raw_validator
        body = {
            "status": "ready"
            if ready
            else "recovering"
            if settings.recovering()
            else "broker not connected",
            "raw_validator": validator.state if validator is not None else "off",
            "database": database,
        }
        return Response(
            content=orjson.dumps(body),
            status_code=200 if ready else 503,
            media_type="application/json",
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    harden_app(app, settings)
    return app


def main(settings: IngestSettings) -> None:
    """Serve the ingest app on settings.host:settings.port until interrupted."""
    app = create_app(settings)
    tune_for_throughput()  # what start-up made is frozen (services.common.gc_tuning)
    serve_app(app, settings)
