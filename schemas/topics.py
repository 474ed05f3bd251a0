"""Topic names (SPEC "Architecture"). Versioned: a breaking change is a new topic."""

from __future__ import annotations

CDRS = "cdrwatch.cdrs.v1"
CDRS_RAW = "cdrwatch.cdrs.raw.v1"
CDRS_DLQ = "cdrwatch.cdrs.dlq.v1"
ALERTS = "cdrwatch.alerts.v1"
STATS = "cdrwatch.stats.v1"
# Per-call facts of the calls that matter (silent, abandoned, a rule broken); see
# schemas.call_v1. Keyed by campaign_id; read by the api for GET /v1/calls.
CALLS = "cdrwatch.calls.v1"
# Campaign configuration from PUT /v1/campaigns/{id}; compacted, keyed by campaign_id.
CAMPAIGNS = "cdrwatch.campaigns.v1"

ALL = (CDRS, CDRS_RAW, CDRS_DLQ, ALERTS, STATS, CALLS, CAMPAIGNS)

# Message headers on cdrwatch.stats.v1 (see schemas.stats_v1).
HEADER_WINDOW = "cdrwatch-window"
HEADER_TENANT = "cdrwatch-tenant"
HEADER_PROFILE = "cdrwatch-profile"
# Values of HEADER_WINDOW: one event-time minute bucket, and the head of a minute holding
# a US 30-day period boundary (the minute's calls in [minute start, boundary)).
WINDOW_MINUTE = "minute"
WINDOW_MINUTE_HEAD = "minute-head"
# Set to "1" on records re-published from the durable archive after the embedded broker
# restarted, and on every stats/alert message the detector derives from such records.
HEADER_REPLAY = "cdrwatch-replay"
# On cdrwatch.cdrs.raw.v1: the dialer format of the message value ("cdr-v1", or one of the
# import formats, e.g. "asterisk-cdr-csv"); absent: the topic's default (services.ingest.raw).
HEADER_FORMAT = "cdrwatch-format"
