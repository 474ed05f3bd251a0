"""asterisk-cdr-custom: cdr_custom's Master.csv written with the stock template of
`cdr_custom.conf.sample` (same file name as cdr_csv, different column order, no linkedid:
rows are joined by `uniqueid`). The rules are asterisk-cdr-csv's; only the default
mapping (column order) differs (docs/integrations/asterisk-cdr-custom.md)."""

from __future__ import annotations

from services.ingest.formats.asterisk_cdr_csv import AsteriskCdrMapper
from services.ingest.formats.base import Mapping

FORMAT = "asterisk-cdr-custom"


def create(mapping: Mapping) -> AsteriskCdrMapper:
    return AsteriskCdrMapper(mapping)
