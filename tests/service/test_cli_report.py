"""`cdrwatch report` against the api served by uvicorn on 127.0.0.1 (a thread): it asks
GET /v1/reports/compliance with the token and writes the answer whole to --output."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import orjson
import pypdf

from services.api.consumer import apply_messages
from services.api.store import AlertStore
from services.cli import main
from services.common.db import create_engine, migrate
from tests.service.http_apps import api_settings, build_api, live_server, make_tokens
from tests.service.test_api_reports import DAY1, DAY2, minute

PERIOD = ["--from", "2026-03-01T23:00:00Z", "--to", "2026-03-03T23:00:00Z"]


def _seed(tmp_path: Path) -> None:
    async def seed() -> None:
        engine = create_engine(api_settings(tmp_path).resolved_database_url())
        try:
            await migrate(engine)
            await apply_messages(
                AlertStore(engine),
                [
                    minute("energia", DAY1, live=60, silent=2),
                    minute("energia", DAY2, live=50, silent=4),
                    minute("other", DAY1, live=10),
                ],
            )
        finally:
            await engine.dispose()

    asyncio.run(seed())


def test_report_writes_each_format_to_a_file(tmp_path, capsys):
    tokens = make_tokens(tmp_path, "compliance", "viewer")
    _seed(tmp_path)
    with live_server(build_api(tmp_path)) as (host, port):
        url = f"http://{host}:{port}"
        common = ["report", "--api-url", url, "--token", tokens["compliance"], *PERIOD]
        json_file, csv_file, pdf_file = (tmp_path / f"pack.{ext}" for ext in ("json", "csv", "pdf"))
        assert main([*common, "--campaign", "energia", "--output", str(json_file)]) == 0
        assert main([*common, "--output", str(csv_file)]) == 0  # format from the extension
        assert main([*common, "--format", "pdf", "--output", str(pdf_file)]) == 0
        refused = main(
            [
                "report",
                "--api-url",
                url,
                "--token",
                tokens["viewer"],
                *PERIOD,
                "--output",
                str(tmp_path / "no.json"),
            ]
        )

    body = orjson.loads(json_file.read_bytes())
    assert [c["campaign_id"] for c in body["campaigns"]] == ["energia"]
    assert [d["silent"] for d in body["campaigns"][0]["days"]] == [2, 4]
    rows = list(csv.DictReader(io.StringIO(csv_file.read_bytes().decode("utf-8-sig"))))
    assert {r["campaign_id"] for r in rows if r["record"] == "day"} == {"energia", "other"}
    text = " ".join(
        " ".join(page.extract_text().split()) for page in pypdf.PdfReader(pdf_file).pages
    )
    assert "Campaign energia" in text and "Campaign other" in text
    assert refused == 1
    assert not (tmp_path / "no.json").exists()
    assert "403" in capsys.readouterr().err


def test_report_without_a_format_or_token_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CDRWATCH_REPORT_TOKEN", raising=False)
    out = str(tmp_path / "pack.txt")
    assert main(["report", *PERIOD, "--token", "t", "--output", out]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["report", *PERIOD, "--output", str(tmp_path / "pack.pdf")]) == 2
    assert "--token" in capsys.readouterr().err
