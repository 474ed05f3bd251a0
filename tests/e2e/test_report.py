"""End to end: CDRs posted to the running stack come back in the audit pack as a CSV and a
PDF written by `cdrwatch report` (a subprocess, over HTTP with the compliance token), and
one of its silent calls through GET /v1/calls/{call_id}."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pypdf
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_stack import dialer_cdr
from tests.helpers import wait_until
from tests.stack import ROOT

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)  # Wednesday 10:00 in Rome


def _report(stack: Stack, campaign: str, output: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
    return subprocess.run(  # noqa: S603 - the project's own command
        [
            sys.executable,
            "-m",
            "services.cli",
            "report",
            "--api-url",
            stack.api_url,
            "--token",
            stack.tokens["compliance"],
            "--campaign",
            campaign,
            "--from",
            "2026-03-03T23:00:00Z",
            "--to",
            "2026-03-04T23:00:00Z",
            "--output",
            output,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_audit_pack_of_a_breaching_campaign(stack: Stack, tmp_path):
    campaign = f"report-{uuid.uuid4().hex[:8]}"
    kinds = ["silent"] * 5 + ["connected"] * 100
    records = [
        dialer_cdr(campaign, n, kind, T0 + timedelta(seconds=20 * n))
        for n, kind in enumerate(kinds)
    ]
    with stack.client("admin") as admin:
        assert admin.put(f"/v1/campaigns/{campaign}", json={"profile": "it"}).status_code == 200
    with stack.client("ingest") as ingest:
        response = ingest.post("/v1/cdrs", json=records)
        assert response.status_code == 202, response.text
    with stack.client("viewer") as viewer:

        def counted():
            answer = viewer.get(f"/v1/campaigns/{campaign}/compliance")
            windows = answer.json().get("windows", []) if answer.status_code == 200 else []
            return windows and windows[0]["denominator"] == 105 and windows[0]

        window = wait_until(counted, timeout=90, message="105 answered calls counted")
        assert (window["numerator"], window["verdict"]) == (5, "violation")
        wait_until(
            lambda: viewer.get("/v1/alerts", params={"campaign_id": campaign}).json()["items"],
            timeout=60,
            message="the cumulative alert",
        )
        wait_until(
            lambda: (
                len(viewer.get("/v1/calls", params={"campaign_id": campaign}).json()["items"]) == 5
            ),
            timeout=60,
            message="five traced silent calls",
        )
        call = viewer.get(f"/v1/calls/{campaign}-0", params={"campaign_id": campaign})
        assert call.status_code == 200, call.text
        body = call.json()
        assert body["outcome"] == "silent"
        assert [c["counts_as"] for c in body["counted_for"]] == ["numerator and denominator"]

    csv_file, pdf_file = tmp_path / "pack.csv", tmp_path / "pack.pdf"
    for output in (csv_file, pdf_file):
        done = _report(stack, campaign, str(output))
        assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(csv_file.read_bytes().decode("utf-8-sig"))))
    [day] = [r for r in rows if r["record"] == "day"]
    assert (day["date"], day["silent"], day["answered_by_person"]) == ("2026-03-04", "5", "105")
    assert sorted(r["call_id"] for r in rows if r["record"] == "call") == sorted(
        f"{campaign}-{n}" for n in range(5)
    )
    text = " ".join(
        " ".join(page.extract_text().split()) for page in pypdf.PdfReader(pdf_file).pages
    )
    for expected in (f"Campaign {campaign}", "it-silent-rate-cumulative", "VIOLATION", "4.76 %"):
        assert expected in text, expected
