"""Dialer and PBX formats mapped to CDR v1: one module per format, one mapping file each.

`create_mapper(format, mapping)` returns a line mapper (`feed`/`flush`, CSV-like files) or
a document mapper (`map_document`, one FreeSWITCH CDR per body or file)."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Protocol

from services.ingest.formats.base import Mapping, Outcome, Rejected, load_mapping

FORMATS: tuple[str, ...] = (
    "asterisk-cdr-csv",
    "asterisk-cdr-custom",
    "asterisk-cel",
    "freeswitch-cdr-csv",
    "freeswitch-json",
    "freeswitch-xml",
    "kamailio-acc",
    "vicidial-csv",
    "cdr-v1-ndjson",
)
DOCUMENT_FORMATS = frozenset({"freeswitch-json", "freeswitch-xml"})


class FormatMapper(Protocol):
    document: bool
    mapping: Mapping


def create_mapper(format_name: str, mapping: Mapping | None = None) -> Any:
    """The mapper of `format_name` with `mapping` (default: the shipped mapping)."""
    if format_name not in FORMATS:
        raise ValueError(f"unknown format {format_name!r}; one of {', '.join(FORMATS)}")
    module = import_module(f"services.ingest.formats.{format_name.replace('-', '_')}")
    return module.create(mapping or load_mapping(format_name))


def map_text(format_name: str, body: bytes, mapping: Mapping | None = None) -> list[Outcome]:
    """Every outcome of a whole body (a file's content, a POST body)."""
    mapper = create_mapper(format_name, mapping)
    if mapper.document:
        try:
            return list(mapper.map_document(body))
        except Exception as exc:  # an input nobody foresaw must not cost a 500
            return [Rejected("unmappable", f"could not be mapped ({type(exc).__name__})")]
    out: list[Outcome] = []
    offset = 0
    for line_no, raw in enumerate(body.splitlines(keepends=True), start=1):
        try:
            out.extend(mapper.feed(decode_line(raw), line_no, offset))
        except Exception as exc:  # one line's failure must not cost its neighbours
            out.append(
                Rejected(
                    "unmappable", f"could not be mapped ({type(exc).__name__})", line_no, offset
                )
            )
        offset += len(raw)
    out.extend(mapper.flush())
    return out


def decode_line(raw: bytes) -> str:
    """UTF-8, else cp1252 with undefined bytes replaced: a PBX's non-UTF-8 caller names
    must not cost the row (they never reach cdrwatch's records anyway)."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace").rstrip("\r\n")


__all__ = [
    "DOCUMENT_FORMATS",
    "FORMATS",
    "Mapping",
    "Outcome",
    "create_mapper",
    "decode_line",
    "load_mapping",
    "map_text",
]
