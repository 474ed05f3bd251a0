"""`cdrwatch report`: the audit pack written to a file, fetched from the api over HTTP.

It asks `GET /v1/reports/compliance` with a compliance (or admin) token rather than
reading the store: the same role check, tenant scope and figures as the API, and it works
against any deployment (docker-compose, PostgreSQL) from any machine that reaches the api.
The file is written whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

FORMATS = ("json", "csv", "pdf")
TIMEOUT_SECONDS = 300.0


def add_parser(sub: Any) -> None:
    rep = sub.add_parser(
        "report",
        help="write the compliance audit pack (json, csv, pdf) of a period to a file",
        description="Fetch GET /v1/reports/compliance from the api with a compliance token "
        "and write it to --output: per campaign and calendar day of its profile's zone, the "
        "regulatory windows with verdicts and headroom, the alerts with acks and notes, the "
        "traced calls and the profile's rule sources.",
    )
    rep.add_argument(
        "--campaign",
        action="append",
        default=[],
        help="campaign id (repeat for several; default: every campaign of the tenant)",
    )
    rep.add_argument("--from", dest="start", required=True, help="RFC 3339, whole minute")
    rep.add_argument("--to", dest="end", required=True, help="RFC 3339, whole minute, excluded")
    rep.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from --output's extension"
    )
    rep.add_argument("--output", required=True, help="file to write ('-' for standard output)")
    rep.add_argument("--tenant", default=None, help="tenant (tokens bound to no tenant only)")
    rep.add_argument(
        "--api-url", default=os.environ.get("CDRWATCH_API_URL", "http://127.0.0.1:8080")
    )
    rep.add_argument(
        "--token",
        default=os.environ.get("CDRWATCH_REPORT_TOKEN"),
        help="compliance or admin token (or CDRWATCH_REPORT_TOKEN)",
    )


def _say(text: str) -> None:
    sys.stderr.write(f"cdrwatch report: {text}\n")


def _format(args: argparse.Namespace) -> str | None:
    if args.format:
        return str(args.format)
    suffix = Path(args.output).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


def main(args: argparse.Namespace, *, transport: httpx.BaseTransport | None = None) -> int:
    fmt = _format(args)
    if fmt is None:
        _say("give --format (json, csv or pdf)")
        return 2
    if not args.token:
        _say("--token (or CDRWATCH_REPORT_TOKEN) is required")
        return 2
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("from", args.start),
        ("to", args.end),
        ("format", fmt),
    ]
    params += [("campaign_id", campaign) for campaign in args.campaign]
    if args.tenant:
        params.append(("tenant", args.tenant))
    url = args.api_url.rstrip("/") + "/v1/reports/compliance"
    try:
        with httpx.Client(transport=transport, timeout=TIMEOUT_SECONDS) as client:
            response = client.get(
                url, params=params, headers={"Authorization": f"Bearer {args.token}"}
            )
    except httpx.HTTPError as exc:
        _say(f"{url}: {exc}")
        return 1
    if response.status_code != 200:
        _say(f"the api answered {response.status_code}: {response.text[:500]}")
        return 1
    if args.output == "-":
        sys.stdout.buffer.write(response.content)
        sys.stdout.buffer.flush()
        return 0
    _write_whole(Path(args.output), response.content)
    _say(f"wrote {args.output} ({len(response.content)} bytes, {fmt})")
    return 0


def _write_whole(path: Path, content: bytes) -> None:
    directory = path.resolve().parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
