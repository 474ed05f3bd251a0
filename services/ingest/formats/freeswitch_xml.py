"""freeswitch-xml: one mod_xml_cdr document, parsed with defusedxml (no entity expansion,
no external entities: the body comes from the network). mod_xml_cdr URL-encodes every
value (`2014-05-05%2007%3A11%3A38`); each one is URL-decoded. `<callflow>` elements are
the profiles, newest first. Mapping rules: services.ingest.formats.freeswitch_common."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote
from xml.etree.ElementTree import Element  # noqa: S405 - type only; parsing is defusedxml's

from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException

from services.ingest.formats.base import Mapping, Outcome, Rejected
from services.ingest.formats.freeswitch_common import map_leg

FORMAT = "freeswitch-xml"


def _text(element: Element | None) -> str:
    if element is None or element.text is None:
        return ""
    return unquote(element.text.strip())


def _fields(element: Element | None, depth: int = 0) -> dict[str, Any]:
    """Child elements as a dict (nested ones as dicts, at most a few levels: a CDR's
    caller profile nests three)."""
    out: dict[str, Any] = {}
    if element is None or depth > 8:
        return out
    for child in element:
        if len(child):
            out[child.tag] = _fields(child, depth + 1)
        else:
            out[child.tag] = _text(child)
    return out


class FreeswitchXmlMapper:
    document = True

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping

    def map_document(self, body: bytes, line: int = 1) -> list[Outcome]:
        try:
            root = SafeElementTree.fromstring(body)
        except (SafeElementTree.ParseError, DefusedXmlException, ValueError) as exc:
            return [Rejected("unreadable", f"not a mod_xml_cdr document ({exc})", line)]
        if root.tag != "cdr":
            return [Rejected("unreadable", f"root element is <{root.tag}>, not <cdr>", line)]
        variables = {
            child.tag: _text(child) for child in root.findall("variables/*") if not len(child)
        }
        flows = [
            {
                "caller_profile": _fields(flow.find("caller_profile")),
                "times": _fields(flow.find("times")),
            }
            for flow in root.findall("callflow")
        ]
        return [map_leg(variables, flows, self.mapping, line)]


def create(mapping: Mapping) -> FreeswitchXmlMapper:
    return FreeswitchXmlMapper(mapping)
