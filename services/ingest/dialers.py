"""Dialer formats over HTTP: map a body with the format's mapping, then ingest the mapped
records through the very path of `POST /v1/cdrs` (`IngestService.ingest`).

- FreeSWITCH (`freeswitch_document`): mod_json_cdr / mod_xml_cdr post one CDR per request,
  as the raw document (`encode=false`, `text/xml`) or as a form field `cdr=` (URL-encoded,
  base64, or plain). Their retry rule is "anything but 2xx is retried, then written to the
  error log dir": accepted and permanently skipped legs answer 2xx, a CDR that can never be
  taken 4xx (it ends in the error dir, for `cdrwatch import` once fixed), a broker outage
  503 with Retry-After (retried, never lost).
- Files (`map_file_body`): a whole CSV/log/NDJSON body; the answer names every rejected
  record by source line.

Mapping files: the shipped default of each format, replaced key by key by
`<format_mappings_dir>/<format>.toml` when the setting names a directory. They are all
loaded (and validated) when the app is created, so a bad file stops the start.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from pydantic import BaseModel, ConfigDict

from schemas.cdr_v1 import FieldError
from services.ingest.formats import FORMATS, map_text
from services.ingest.formats.base import Mapped, Mapping, Outcome, Rejected, load_mapping
from services.ingest.parsing import MalformedBody, PayloadTooLarge

FORM_URLENCODED = "application/x-www-form-urlencoded"
FORM_BASE64 = "application/x-www-form-base64-encoded"


def load_format_mappings(mappings_dir: Path | None) -> dict[str, Mapping]:
    """Every format's mapping: the shipped one, overridden by `<dir>/<format>.toml`."""
    out: dict[str, Mapping] = {}
    for name in FORMATS:
        path = mappings_dir / f"{name}.toml" if mappings_dir is not None else None
        out[name] = load_mapping(name, path if path is not None and path.exists() else None)
    return out


def freeswitch_document(body: bytes, content_type: str | None) -> bytes:
    """The CDR document of a mod_json_cdr / mod_xml_cdr request body (MalformedBody when a
    form post has no `cdr` field or its base64 does not decode)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    stripped = body.lstrip()
    if media not in (FORM_URLENCODED, FORM_BASE64) and not stripped.startswith(b"cdr="):
        return body
    field = _form_field(stripped, b"cdr")
    if field is None:
        raise MalformedBody("form post without a `cdr` field")
    if media == FORM_BASE64:
        try:
            return base64.b64decode(unquote(field.decode("latin-1")), validate=False)
        except (binascii.Error, ValueError):
            raise MalformedBody("the `cdr` field is not base64") from None
    if media == FORM_URLENCODED:
        # switch_url_encode writes a space as %20: a literal "+" is a plus sign (+39...)
        return unquote_to_bytes(field)
    return field  # application/x-www-form-plaintext: cdr=<document as is>


def _form_field(body: bytes, name: bytes) -> bytes | None:
    prefix = name + b"="
    if body.startswith(prefix):
        # `cdr=` then the document, which may itself contain "&" when not URL-encoded
        return body[len(prefix) :]
    for part in body.split(b"&"):
        if part.startswith(prefix):
            return part[len(prefix) :]
    return None


class LineError(BaseModel):
    """A record of a file that was not accepted, named by its first source line."""

    model_config = ConfigDict(frozen=True)

    line: int
    call_id: str | None
    errors: list[FieldError]


class FormatResult(BaseModel):
    """What `POST /v1/cdrs/formats/{format}` and the FreeSWITCH routes answer."""

    model_config = ConfigDict(frozen=True)

    format: str
    accepted: int
    duplicates: int
    skipped: dict[str, int]
    rejected: list[LineError]


def outcomes_of(format_name: str, body: bytes, mapping: Mapping) -> list[Outcome]:
    if format_name not in FORMATS:
        raise ValueError(format_name)
    return map_text(format_name, body, mapping)


def split_outcomes(
    outcomes: list[Outcome], max_records: int
) -> tuple[list[Mapped], list[Rejected], Counter[str]]:
    mapped = [o for o in outcomes if isinstance(o, Mapped)]
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    skipped: Counter[str] = Counter(
        o.reason for o in outcomes if not isinstance(o, Mapped | Rejected)
    )
    if len(mapped) > max_records:
        raise PayloadTooLarge(f"more than {max_records} calls in one request; split the file")
    return mapped, rejected, skipped


def mapping_errors(rejected: list[Rejected]) -> list[LineError]:
    return [
        LineError(
            line=o.line,
            call_id=o.call_id,
            errors=[FieldError(field="(record)", message=f"{o.reason}: {o.message}")],
        )
        for o in rejected
    ]


def result_of(
    format_name: str,
    mapped: list[Mapped],
    mapping_rejected: list[Rejected],
    skipped: Counter[str],
    ingest_result: Any,
) -> FormatResult:
    """Merge the mapping's and the ingest's rejections, each named by source line."""
    rejected = mapping_errors(mapping_rejected)
    if ingest_result is not None:
        for item in ingest_result.rejected:
            source = mapped[item.index]
            rejected.append(
                LineError(line=source.line, call_id=item.call_id, errors=list(item.errors))
            )
    rejected.sort(key=lambda r: r.line)
    return FormatResult(
        format=format_name,
        accepted=ingest_result.accepted if ingest_result is not None else 0,
        duplicates=ingest_result.duplicates if ingest_result is not None else 0,
        skipped=dict(skipped),
        rejected=rejected,
    )
