"""Versioned wire models of cdrwatch (CDR v1, alert v1, stats v1) and topic names."""

from schemas.alert_v1 import AlertEvidence, AlertV1, AlertWindow
from schemas.cdr_v1 import CdrV1, FieldError, NormalizedCdrV1, parse_cdr
from schemas.stats_v1 import COUNT_FIELDS, StatsV1, stats_from_counts

__all__ = [
    "COUNT_FIELDS",
    "AlertEvidence",
    "AlertV1",
    "AlertWindow",
    "CdrV1",
    "FieldError",
    "NormalizedCdrV1",
    "StatsV1",
    "parse_cdr",
    "stats_from_counts",
]
