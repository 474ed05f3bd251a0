"""The api app: wiring only. `create_app` builds it; `main` serves it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from services.api.campaigns import (
    CampaignConfigError,
    CampaignNotFound,
    DetectorProfiles,
    ProfileValidator,
    TenantForbidden,
)
from services.api.clock import Clock, utc_now
from services.api.consumer import ConsumerFactory, StoreConsumer
from services.api.metrics import ApiMetrics
from services.api.publisher import (
    ArchivingCampaignPublisher,
    CampaignPublisher,
    KafkaCampaignPublisher,
    PublishUnavailable,
)
from services.api.routes import (
    alerts,
    campaigns,
    dashboard,
    health,
    rejections,
    reports,
    webhooks,
)
from services.api.routes import calls as call_routes
from services.api.store import AlertStore, InvalidCursor
from services.api.webhooks import DeliveryPolicy, WebhookDispatcher, WebhookStore
from services.common.archive import Archive, open_archive
from services.common.auth import TokenStore
from services.common.datadir import ensure_private_dir
from services.common.db import create_engine, migrate
from services.common.http_app import harden_app, serve_app
from services.common.kafka import BrokerHealth
from services.common.settings import ApiSettings
from services.detector.core.profiles import ProfileError, load_profile, retention_refusal

log = logging.getLogger(__name__)

PURGE_INTERVAL = timedelta(hours=1)
RETRY_AFTER_SECONDS = 5


def create_app(
    settings: ApiSettings,
    *,
    store: AlertStore | None = None,
    consumer_enabled: bool = True,
    clock: Clock | None = None,
    campaign_publisher: CampaignPublisher | None = None,
    profiles: ProfileValidator | None = None,
    registry: CollectorRegistry | None = None,
    consumer_factory: ConsumerFactory | None = None,
) -> FastAPI:
    """The api. Without `store` it opens the settings' database (created and migrated at
    start-up, disposed at shutdown); without `campaign_publisher` PUT produces to Kafka;
    `consumer_enabled=False` leaves the topics alone (tests feed the store directly).
    A retention shorter than a profile's minimum (`it`: 2 years) is refused: ValueError."""
    refusal = retention_refusal(settings.alert_retention_days)
    if refusal is not None:
        raise ValueError(f"CDRWATCH_ALERT_RETENTION_DAYS: {refusal}")
    try:
        load_profile(settings.default_profile)
    except ProfileError as exc:
        raise ValueError(f"CDRWATCH_DEFAULT_PROFILE: {exc}") from None
    clock = clock or utc_now
    registry = registry if registry is not None else CollectorRegistry()
    owns_engine = store is None
    if store is None:
        store = AlertStore(
            create_engine(settings.resolved_database_url()),
            clock=clock,
            default_tenant=settings.default_tenant,
            stale_feed_after=timedelta(minutes=settings.stale_feed_minutes),
        )
    archive = open_archive(settings)
    kafka_publisher: KafkaCampaignPublisher | ArchivingCampaignPublisher | None = None
    if campaign_publisher is None:
        kafka_publisher = KafkaCampaignPublisher(settings)
        if archive is not None:
            kafka_publisher = ArchivingCampaignPublisher(kafka_publisher, archive)
        campaign_publisher = kafka_publisher
    broker_health = (
        BrokerHealth(settings.kafka_bootstrap, settings.broker_probe_interval_seconds)
        if consumer_enabled
        else None
    )
    consumer = StoreConsumer(settings, store, consumer_factory=consumer_factory, registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if owns_engine:
                if settings.database_url is None:
                    ensure_private_dir(settings.data_dir)
                stack.push_async_callback(store.engine.dispose)
            await migrate(store.engine)
            if kafka_publisher is not None:
                stack.push_async_callback(kafka_publisher.stop)
            if archive is not None:
                stack.callback(archive.close)
            if broker_health is not None:
                stack.push_async_callback(broker_health.stop)
                await broker_health.start()
            ingest_stop = await _start_ingest(app)
            if ingest_stop is not None:
                stack.push_async_callback(ingest_stop)
            if consumer_enabled:
                app.state.consumer = consumer
                stack.push_async_callback(_cancel, asyncio.create_task(consumer.run()))
            if settings.webhooks_enabled:
                policy = _delivery_policy(settings)
                dispatcher = WebhookDispatcher(app.state.webhooks, policy, clock)
                stack.push_async_callback(_cancel, asyncio.create_task(dispatcher.run()))
            retention = timedelta(days=settings.alert_retention_days)
            stack.push_async_callback(_cancel, asyncio.create_task(_purge(store, retention)))
            yield

    app = FastAPI(
        title="cdrwatch api",
        version="1",
        summary="Per-campaign silent/abandoned-call compliance: stats, alerts, configuration.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.store = store
    app.state.tokens = TokenStore(store.engine)
    app.state.webhooks = WebhookStore(store.engine, clock)
    app.state.campaign_publisher = campaign_publisher
    app.state.profiles = profiles or DetectorProfiles()
    app.state.consumer = None  # set while the consumer runs; None: disabled
    app.state.broker_health = broker_health
    app.state.metrics = ApiMetrics(
        registry,
        campaign_cap=settings.metrics_campaign_cap,
        clock=clock,
        newest_output_at=lambda: consumer.newest_output_at,
        default_profile=settings.default_profile,
    )
    _add_error_handlers(app)
    app.include_router(call_routes.router)
    if settings.serve_ingest:
        _mount_ingest(app, settings, registry, clock, archive)
    for module in (health, campaigns, rejections, alerts, reports, webhooks, dashboard):
        app.include_router(module.router)
    dashboard.mount_static(app)
    harden_app(app, settings)
    return app


def _delivery_policy(settings: ApiSettings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_attempts=settings.webhook_max_attempts,
        backoff_seconds=settings.webhook_backoff_seconds,
        backoff_max_seconds=settings.webhook_backoff_max_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        concurrency=settings.webhook_concurrency,
    )


def _mount_ingest(
    app: FastAPI,
    settings: ApiSettings,
    registry: CollectorRegistry,
    clock: Clock,
    archive: Archive | None,
) -> None:
    """Serve POST /v1/cdrs from this app too (SPEC: one URL for the whole HTTP API). Its
    Kafka publisher is started and stopped by the lifespan (`_start_ingest`)."""
    try:
        from services.ingest.app import load_pseudonym_key
        from services.ingest.dialers import load_format_mappings
        from services.ingest.metrics import IngestMetrics
        from services.ingest.normalize import Normalizer
        from services.ingest.routes import router
        from services.ingest.service import IngestService, build_publisher
    except ImportError as exc:  # the ingest package is optional for the api
        log.warning("ingest_not_mounted error=%s", exc)
        return
    normalizer = Normalizer(
        load_pseudonym_key(settings), clock, timedelta(seconds=settings.future_tolerance_seconds)
    )
    app.state.ingest = IngestService(
        settings, build_publisher(settings, archive), normalizer, IngestMetrics(registry)
    )
    app.state.format_mappings = load_format_mappings(settings.format_mappings_dir)
    app.include_router(router)


async def _start_ingest(app: FastAPI) -> Callable[[], Awaitable[None]] | None:
    service = getattr(app.state, "ingest", None)
    if service is None:
        return None
    await service.publisher.start()
    stop: Callable[[], Awaitable[None]] = service.publisher.stop
    return stop


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _purge(store: AlertStore, retention: timedelta) -> None:
    """Drop resolved alerts, minute buckets and traced calls older than the retention,
    hourly."""
    while True:
        try:
            deleted_alerts, deleted_buckets = await store.purge_older_than(retention)
            deleted_calls = await store.purge_calls_older_than(retention)
            if deleted_alerts or deleted_buckets or deleted_calls:
                log.info(
                    "purged alerts=%s buckets=%s calls=%s",
                    deleted_alerts,
                    deleted_buckets,
                    deleted_calls,
                )
        except Exception as exc:  # a failed purge is retried at the next interval
            log.warning("purge_failed error=%r", exc)
        await asyncio.sleep(PURGE_INTERVAL.total_seconds())


def _add_error_handlers(app: FastAPI) -> None:
    def handler(
        status: int, body: Callable[[Exception], object], headers: dict[str, str] | None = None
    ) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def respond(_: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": body(exc)}, status_code=status, headers=headers)

        return respond

    def field_error(where: str) -> Callable[[Exception], object]:
        def body(exc: Exception) -> object:
            field = getattr(exc, "field", "cursor")
            return [{"type": "value_error", "loc": [where, field], "msg": str(exc)}]

        return body

    app.add_exception_handler(CampaignNotFound, handler(404, lambda _: "campaign not found"))
    app.add_exception_handler(CampaignConfigError, handler(422, field_error("body")))
    app.add_exception_handler(InvalidCursor, handler(422, field_error("query")))
    app.add_exception_handler(TenantForbidden, handler(403, str))
    app.add_exception_handler(
        PublishUnavailable,
        handler(
            503,
            lambda exc: f"campaign configuration not applied: {exc}",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        ),
    )


def main(settings: ApiSettings) -> None:
    """Serve the api on settings.host:settings.port (127.0.0.1 by default) until stopped,
    with the server limits of services.common.http_server."""
    serve_app(create_app(settings), settings)
