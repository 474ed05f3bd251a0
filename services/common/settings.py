"""Typed settings, built once at each entrypoint and passed down (STYLE habit 3).

Every setting can come from the environment with the `CDRWATCH_` prefix, e.g.
`CDRWATCH_KAFKA_BOOTSTRAP=127.0.0.1:9092`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service needs."""

    model_config = SettingsConfigDict(env_prefix="CDRWATCH_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Idempotent producer: on for Apache Kafka; off for the embedded Tansu broker, which
    # answers InitProducerId with an error. Dedup by call_id absorbs retries either way.
    kafka_idempotence: bool = False
    kafka_partitions: int = Field(default=4, ge=1, le=1024)
    kafka_replication_factor: int = Field(default=1, ge=1, le=16)
    # The longest the streaming consumers' fetches (the detector's stages, the api's
    # outputs consumer) wait at the broker for records. Apache Kafka answers a fetch as
    # soon as a record arrives, whatever this. The embedded Tansu does not: a record sent
    # to a topic a consumer waited on arrived 12-553 ms after its send with a 1,500 ms
    # wait, 15-213 ms with 500 and 7-20 ms with 100 (aiokafka, 2026-12-04), so there each
    # consumer on an alert's path added up to about half this wait. faust hard-codes
    # 1,500 ms, aiokafka's default is 500; 100 ms costs an idle consumer ten fetch
    # requests a second.
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=1, le=5_000)
    data_dir: Path = Path(".cdrwatch")
    database_url: str | None = None
    log_json: bool | None = None  # None: JSON when stderr is not a terminal
    # Tenancy is part of every key (SPEC "CDR v1"): records without a tenant, and records
    # written with a token bound to no tenant, belong to this one.
    default_tenant: str = Field(default="default", min_length=1, max_length=128)
    # The durable archive (services.common.archive): every published CDR and campaign
    # setting also kept in data_dir/archive.sqlite3, replayed into a fresh broker by
    # `cdrwatch up`. On for the embedded broker (`cdrwatch up` sets it); off by default and
    # in docker-compose, where Kafka itself is durable.
    archive: bool = False
    # While this file exists the stack is recovering (the embedded broker restarted and the
    # archive is being replayed): ingest answers 503 and every /readyz says so. Set by
    # `cdrwatch up` for its children.
    recovery_marker: Path | None = None
    # The background broker probe behind /readyz and ingest's fail-fast 503 (seconds).
    broker_probe_interval_seconds: float = Field(default=0.5, gt=0, le=60)

    def recovering(self) -> bool:
        return self.recovery_marker is not None and self.recovery_marker.exists()

    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: the setting, else SQLite under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cdrwatch.db').resolve()}"


class IngestSettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    max_records: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # POST /v1/cdrs
    # HTTP limits of the api and ingest servers (services/common/http_security.py and
    # http_server.py): the body of every other route; the time a client has to send a
    # complete request header; idle time between requests; request line plus headers.
    http_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_keep_alive_seconds: int = Field(default=5, ge=1)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=4096)
    # A CDR more than this many seconds in the future of the ingest clock is rejected.
    future_tolerance_seconds: int = Field(default=3600, ge=0)
    # Key of the HMAC that pseudonymises callee numbers. When unset, `cdrwatch up` and the
    # ingest entrypoint create one in data_dir/pseudonym.key and keep it across restarts.
    pseudonym_key: str | None = None
    send_timeout_seconds: float = Field(default=10.0, gt=0)
    # The validator of records dialers write straight to cdrwatch.cdrs.raw.v1
    # (services.ingest.raw), run by the ingest app's lifespan when on.
    consume_raw: bool = True
    raw_consumer_group: str = Field(default="cdrwatch-ingest-raw", min_length=1)
    raw_batch_max: int = Field(default=500, ge=1, le=10_000)  # messages per getmany
    raw_session_timeout_seconds: float = Field(default=10.0, ge=1)
    # Format of a raw-topic message without a `cdrwatch-format` header: "cdr-v1" or one of
    # the import formats (services.ingest.raw); checked when the validator is created.
    raw_default_format: str = "cdr-v1"
    # Unknown CDR fields are dropped at ingest (they may hold personal data); these names,
    # comma-separated, are kept in `extra` instead. List only non-personal fields; a value
    # that looks like a phone number is pseudonymised all the same.
    extra_fields_allowed: str = ""
    # The largest normalised record ingest publishes (JSON bytes), well under the broker's
    # message size limit (1 MiB by default); a larger record is refused alone (422).
    max_record_bytes: int = Field(default=64 * 1024, ge=4096, le=512 * 1024)
    # Dialer-format mappings (issue 9): `<dir>/<format>.toml` replaces keys of the shipped
    # mapping of that format (services/ingest/formats/mappings). Loaded and checked at start.
    format_mappings_dir: Path | None = None

    def extra_fields_allowed_set(self) -> frozenset[str]:
        names = (name.strip() for name in self.extra_fields_allowed.split(","))
        return frozenset(name for name in names if name)


class DetectorSettings(CommonSettings):
    app_id: str = "cdrwatch-detector"
    default_profile: str = "it"
    dedup_retention_days: int = Field(default=8, ge=1)
    # At most 28: a late call may become a campaign's first and move the US 30-day
    # boundaries; under 29 days none of the calls already counted lies past the newest
    # boundary minute it creates (services.detector.core.engine, Engine).
    lateness_days: int = Field(default=7, ge=0, le=28)
    sweep_interval_seconds: float = Field(default=300.0, gt=0)
    batch_max: int = Field(default=2000, ge=1)
    # CDRs the CDR stage counts between two returns to the event loop (`Detector.handle`):
    # about 0.25 s of work on the reference machine, far inside the session timeout.
    batch_cdrs_max: int = Field(default=5000, ge=1)
    # Larger batches mean fewer stats and alert updates per CDR; 0.25 s stays far inside the
    # 2 s alert-latency budget.
    batch_within_seconds: float = Field(default=0.25, gt=0)
    # An alert whose figures change but not its state, severity or window is published at
    # most once per this many seconds, with its latest figures (services/detector/pacing.py);
    # a transition goes out at once. 0: every update as the engine makes it. At most 10:
    # held updates leave before the next offset commit, which waits for them.
    alert_update_interval_seconds: float = Field(default=1.0, ge=0, le=10)
    metrics_host: str = "127.0.0.1"  # containers set 0.0.0.0 so Prometheus can scrape
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics server
    # A worker that sends no heartbeat for this long leaves its group. 6 s, Apache Kafka's
    # smallest by default (group.min.session.timeout.ms): a dead worker's partitions move
    # sooner, and the embedded broker holds a group's first join for half of it (10 s made
    # every start wait 5 s; `bench/worker_ready.py`). The loop is never held that long:
    # batches are counted in chunks (`batch_cdrs_max`).
    session_timeout_seconds: float = Field(default=6.0, gt=0)
    store: str = "memory://"
    # Per-callee histories (lockouts, frequency caps) may hold 10 million keys: RocksDB keeps
    # them on disk with bounded memory. An entry untouched for `callee_ttl_days` of wall
    # time is dropped at compaction: longer than any rule (60 days) plus the lateness.
    # "rocksdb:NAME": faust ignores an empty "rocksdb://" on a table, and NAME (relative)
    # places the files under the detector's table directory in the data dir.
    callee_store: str = "rocksdb:callees"
    callee_ttl_days: int = Field(default=120, ge=70)
    callee_cache_mib: int = Field(default=64, ge=8)  # RocksDB block cache per partition
    # Which stages this worker runs. "all": the CDR stage (counts, windows, alerts, the
    # lockout violations back into the campaigns) and the per-callee stage (histories,
    # lockouts, frequency caps) in one process. "cdrs" and "callees": one of the two, so
    # that the stages run on two cores (a process runs Python on one core at a time; the
    # per-callee stage was a quarter of the worker's CPU). A "callees" worker is a faust
    # app of its own, `<app_id>-callees`, with its own consumer group; its table keeps the
    # change-log topic of "all", so a deployment can switch between the two forms. Every
    # stage must run somewhere: "all" workers, or "cdrs" and "callees" workers side by side
    # (`cdrwatch up` and docker-compose run the two), not a mix of "all" and "callees"
    # (two groups would each run the per-callee stage). README "Design decisions".
    stage: Literal["all", "cdrs", "callees"] = "all"
    # How often a worker running the per-callee stage (`all`, `callees`) writes its
    # heartbeat and checks that no worker of the other form is live
    # (services/detector/stage_guard.py).
    stage_check_seconds: float = Field(default=30.0, gt=0)
    # faust's own log level: INFO shows assignments, recoveries and commits (diagnosis).
    log_level: str = Field(default="WARNING", pattern="^(DEBUG|INFO|WARNING|ERROR)$")


class ApiSettings(IngestSettings):
    """The api; it inherits the ingest limits because it serves the ingest routes too."""

    port: int = Field(default=8080, ge=0, le=65535)
    alert_retention_days: int = Field(default=730, ge=1)
    # A campaign whose last CDR reached the api longer ago than this shows "stale" (a
    # dialer that stopped sending); GET /v1/campaigns `feed`, the dashboard.
    stale_feed_minutes: float = Field(default=5.0, gt=0)
    # GET /v1/alerts/stream: a comment line this often so proxies keep the stream open,
    # the campaign list (`stats` event) this often, new alert changes looked up this often.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    sse_stats_seconds: float = Field(default=2.0, gt=0)
    sse_poll_seconds: float = Field(default=0.5, gt=0)
    metrics_campaign_cap: int = Field(default=2000, ge=1)
    # The profile of a campaign neither configured (PUT) nor reported by the detector yet:
    # the same CDRWATCH_DEFAULT_PROFILE the detector reads (DetectorSettings.default_profile).
    default_profile: str = "it"
    consumer_group: str = "cdrwatch-api"
    # The api also serves POST /v1/cdrs (the ingest routes) so that one URL does all of
    # SPEC's HTTP API; a separate ingest process scales the write path on its own.
    serve_ingest: bool = True
    # Webhooks (services/api/webhooks.py): delivered by a background task of the api from
    # the alert_history feed. A failed try is retried after backoff, 2 × backoff, 4 × ...
    # (capped at backoff_max) until max_attempts tries, then the delivery is dead.
    webhooks_enabled: bool = True
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_seconds: float = Field(default=2.0, gt=0, le=3600)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0, le=86400)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_concurrency: int = Field(default=16, ge=1, le=1000)
