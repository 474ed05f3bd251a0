"""freeswitch-json: one mod_json_cdr document (a POST body, or a file of its log dir).

Parsed with `object_pairs_hook` so that a document with the key `"callflow"` twice (a
transferred call) keeps every profile, not only the last one (which holds zero answer
and hangup times); `callflow` as an array (2018+) is the same list. Values may be
URL-encoded (`encode-values`): every variable is URL-decoded. Mapping rules:
services.ingest.formats.freeswitch_common."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from services.ingest.formats.base import Mapping, Outcome, Rejected
from services.ingest.formats.freeswitch_common import map_leg

FORMAT = "freeswitch-json"


class _Multi(list[Any]):
    """Every value of a key that occurs more than once in one object."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key == "callflow":
            flows = out.setdefault("callflow", _Multi())
            flows.extend(value if isinstance(value, list) else [value])
        elif key not in out:
            out[key] = value
    return out


def parse_document(body: bytes | str) -> dict[str, Any]:
    """The document as a dict whose `callflow` is the list of every profile in order.
    Raises ValueError when it is not a JSON object."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        value = json.loads(text, object_pairs_hook=_pairs)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _decoded(value: Any, depth: int = 0) -> Any:
    """`value` with every string URL-decoded (mod_json_cdr's `encode-values`); what nests
    deeper than a CDR ever does is dropped."""
    if isinstance(value, str):
        return unquote(value)
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {key: _decoded(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_decoded(item, depth + 1) for item in value]
    return value


_MAX_DEPTH = 16


class FreeswitchJsonMapper:
    document = True

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping

    def map_document(self, body: bytes, line: int = 1) -> list[Outcome]:
        try:
            doc = parse_document(body)
        except ValueError as exc:
            return [Rejected("unreadable", f"not a mod_json_cdr document ({exc})", line)]
        raw_vars = doc.get("variables")
        if not isinstance(raw_vars, dict):
            return [Rejected("unreadable", "no `variables` object", line)]
        variables = {
            str(k): unquote(str(v)) if isinstance(v, str) else str(v)
            for k, v in raw_vars.items()
            if not isinstance(v, dict | list)
        }
        flows = [_decoded(flow) for flow in doc.get("callflow", []) if isinstance(flow, dict)]
        return [map_leg(variables, flows, self.mapping, line)]


def create(mapping: Mapping) -> FreeswitchJsonMapper:
    return FreeswitchJsonMapper(mapping)
