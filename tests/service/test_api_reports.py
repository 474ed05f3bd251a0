"""GET /v1/reports/compliance (JSON, CSV, PDF) and GET /v1/calls/{call_id} in process:
temp SQLite fed with minute buckets, alerts and traced calls through the consumer's own
apply function, the real profiles. The PDF is rendered and its text read back (pypdf)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pypdf
import pytest

from schemas.alert_v1 import AlertV1
from services.api.consumer import alert_message, calls_message
from services.api.report_render import CSV_COLUMNS
from services.detector.core.profiles import load_profile
from tests.service.test_api_compliance import api, minute  # noqa: F401 - the fixture
from tests.service.test_api_store_calls import answered, silent

MINUTE = timedelta(minutes=1)
# 2 March 2026: Rome is UTC+1, so 10:00 UTC is 11:00 in Rome, the same calendar day.
DAY1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
PERIOD = {"from": "2026-03-01T23:00:00Z", "to": "2026-03-03T23:00:00Z"}  # two Rome days
ALERT_ID = "a-cumulative"


def _alert() -> AlertV1:
    return AlertV1.model_validate(
        {
            "id": ALERT_ID,
            "rule": "it-silent-rate-cumulative",
            "profile": "it",
            "campaign_id": "energia",
            "tenant_id": "default",
            "severity": "violation",
            "state": "firing",
            "value": 6 / 110,
            "threshold": 0.03,
            "numerator": 6,
            "denominator": 110,
            "window": {"start": "2026-03-02T10:00:00Z", "end": "2026-03-03T10:01:00Z"},
            "opened_at": "2026-03-03T10:00:30Z",
            "evidence": {"call_ids": ["s-2", "s-missing"]},
            "reference": "Garante 2014 IT-SC-3",
        }
    )


async def _seed(api) -> None:  # noqa: F811
    # Day 1: 2 silent of 60 answered (insufficient sample). Day 2: 4 silent of 50: a
    # certain violation (4 > 3 % of the 100-call minimum sample). Whole campaign: 6 of
    # 110 = 5.45 %, a violation.
    await api.feed(
        minute("energia", DAY1, live=60, silent=2),
        minute("energia", DAY2, live=50, silent=4),
        alert_message(_alert()),
        calls_message(
            "energia",
            "default",
            [
                silent("s-1", DAY1 + 5 * timedelta(seconds=1), rule_hits=["it-silent-release"]),
                silent("s-2", DAY2 + 10 * timedelta(seconds=1)),
                answered(
                    "w-1", DAY2 + 20 * timedelta(seconds=1), rule_hits=["it-long-silent-wait"]
                ),
            ],
        ),
    )
    response = await api.client.post(
        f"/v1/alerts/{ALERT_ID}/ack",
        json={"note": "dialer pacing lowered, Giulia"},
        headers={
            "Authorization": "Bearer "
            + await api.app.state.tokens.create("compliance", name="Giulia Rossi")
        },
    )
    assert response.status_code == 200, response.text


async def _report(api, fmt: str, **params: str):  # noqa: F811
    response = await api.client.get(
        "/v1/reports/compliance",
        params={**PERIOD, "format": fmt, **params},
        headers=await api.token("compliance"),
    )
    assert response.status_code == 200, response.text
    return response


async def test_json_report_has_days_windows_alerts_calls_and_sources(api):  # noqa: F811
    await _seed(api)
    body = (await _report(api, "json", campaign_id="energia")).json()
    assert (body["from"], body["to"], body["tenant_id"]) == (
        "2026-03-01T23:00:00Z",
        "2026-03-03T23:00:00Z",
        "default",
    )
    [campaign] = body["campaigns"]
    profile = load_profile("it")
    assert (campaign["profile"], campaign["profile_reviewed"], campaign["zone"]) == (
        "it",
        profile.reviewed.isoformat(),
        "Europe/Rome",
    )
    assert len(campaign["profile_sha256"]) == 64
    assert campaign["primary_rule"] == "it-silent-rate-cumulative"
    days = [
        (
            d["date"],
            d["start"],
            d["end"],
            d["partial"],
            d["answered_by_person"],
            d["silent"],
            d["silent_rate"],
            [(r["rule"], r["cap"], r["verdict"], r["headroom"]) for r in d["rules"]],
        )
        for d in campaign["days"]
    ]
    assert days == [
        (
            "2026-03-02",
            "2026-03-01T23:00:00Z",
            "2026-03-02T23:00:00Z",
            False,
            60,
            2,
            2 / 60,
            [("it-silent-rate-cumulative", 0.03, "insufficient", None)],
        ),
        (
            "2026-03-03",
            "2026-03-02T23:00:00Z",
            "2026-03-03T23:00:00Z",
            False,
            50,
            4,
            4 / 50,
            [("it-silent-rate-cumulative", 0.03, "violation", 0)],
        ),
    ]
    [window] = campaign["windows"]
    assert (window["window"], window["numerator"], window["denominator"], window["verdict"]) == (
        "cumulative",
        6,
        110,
        "violation",
    )
    [alert] = campaign["alerts"]
    assert alert["id"] == ALERT_ID
    assert alert["ack_note"] == "dialer pacing lowered, Giulia"
    assert alert["acknowledged_at"] is not None
    assert [(h["kind"], h["state"]) for h in alert["history"]] == [
        ("opened", "firing"),
        ("acknowledged", "firing"),
    ]
    assert [n["note"] for n in alert["notes"]] == ["dialer pacing lowered, Giulia"]
    assert [(c["call_id"], c["outcome"], c["rule_hits"]) for c in campaign["calls"]] == [
        ("s-1", "silent", ["it-silent-release"]),
        ("s-2", "silent", []),
        ("w-1", "answered", ["it-long-silent-wait"]),
    ]
    assert all(c["callee_key"] == "k" * 16 for c in campaign["calls"])
    assert campaign["calls_truncated"] is False
    sources = {s["key"]: s for s in campaign["rule_sources"]}
    assert (
        sources["it-silent-rate-cumulative"]["source"]
        == profile.sources["it-silent-rate-cumulative"]
    )
    assert sources["it-silent-rate-cumulative"]["reviewed"] == "2026-12-02"
    assert "min_sample" in sources


async def test_a_day_cut_by_the_period_is_partial_and_counts_only_its_part(api):  # noqa: F811
    await _seed(api)
    body = (await _report(api, "json", **{"from": "2026-03-03T10:00:00Z"})).json()
    [campaign] = body["campaigns"]  # no campaign_id: every campaign of the tenant
    [day] = campaign["days"]
    assert (day["date"], day["partial"], day["silent"]) == ("2026-03-03", True, 4)
    assert [c["call_id"] for c in campaign["calls"]] == ["s-2", "w-1"]


async def test_csv_is_one_flat_utf8_table_with_a_bom(api):  # noqa: F811
    await _seed(api)
    response = await _report(api, "csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        'filename="cdrwatch-compliance-20260301-20260303.csv"'
        in response.headers["content-disposition"]
    )
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    by_record = {}
    for row in rows:
        by_record.setdefault(row["record"], []).append(row)
    assert [
        (r["date"], r["silent"], r["answered_by_person"], r["verdict"]) for r in by_record["day"]
    ] == [
        ("2026-03-02", "2", "60", "insufficient"),
        ("2026-03-03", "4", "50", "violation"),
    ]
    [window] = by_record["window"]
    assert (window["window"], window["start"], window["verdict"], window["cap"]) == (
        "cumulative",
        "2026-03-02T10:00:00Z",
        "violation",
        "0.03",
    )
    [alert] = by_record["alert"]
    assert (alert["alert_id"], alert["note"], alert["call_id"]) == (
        ALERT_ID,
        "Giulia Rossi, 2026-06-01T12:00:00Z: dialer pacing lowered, Giulia",
        "s-2 s-missing",
    )
    assert [r["call_id"] for r in by_record["call"]] == ["s-1", "s-2", "w-1"]


async def test_pdf_renders_and_reads_back(api):  # noqa: F811
    await _seed(api)
    response = await _report(api, "pdf")
    assert response.headers["content-type"] == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    flat = " ".join(text.split())
    for expected in (
        "Compliance report",
        "Period: 2026-03-01T23:00:00Z to 2026-03-03T23:00:00Z",
        "Campaign energia",
        f"reviewed {load_profile('it').reviewed.isoformat()}",
        "2026-03-02",
        "3.33 %",  # day 1's silent rate
        "8.00 %",  # day 2's
        "Daily silent rate (it-silent-rate-cumulative) against the cap 3.00 %",
        "VIOLATION it-silent-rate-cumulative",
        "notes: Giulia Rossi, 2026-06-01T12:00:00Z: dialer pacing lowered, Giulia",
        "s-2",
        "(not traced in the period)",  # s-missing: evidence without a traced row
        "it-long-silent-wait",
        "Rule sources in force",
    ):
        assert expected in flat, expected


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-03-03T00:00:00Z", "to": "2026-03-02T00:00:00Z"}, "from"),
        ({"from": "2026-03-02T00:00:30Z", "to": "2026-03-03T00:00:00Z"}, "from"),
        ({"to": "2026-03-03T00:00:00Z"}, "from"),
        ({**PERIOD, "format": "xlsx"}, "format"),
    ],
    ids=["from-after-to", "from-not-whole-minute", "from-missing", "unknown-format"],
)
async def test_bad_report_queries_are_422(api, params, field):  # noqa: F811
    response = await api.client.get(
        "/v1/reports/compliance", params=params, headers=await api.token("compliance")
    )
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_reports_need_the_compliance_role_and_a_known_campaign(api):  # noqa: F811
    await _seed(api)
    viewer = await api.client.get(
        "/v1/reports/compliance", params=PERIOD, headers=await api.token("viewer")
    )
    assert viewer.status_code == 403
    unknown = await api.client.get(
        "/v1/reports/compliance",
        params={**PERIOD, "campaign_id": "nope"},
        headers=await api.token("compliance"),
    )
    assert unknown.status_code == 404


# --- GET /v1/calls/{call_id} -------------------------------------------------------------


async def test_one_call_with_the_rules_it_counted_for(api):  # noqa: F811
    await _seed(api)
    response = await api.client.get(
        "/v1/calls/s-1", params={"campaign_id": "energia"}, headers=await api.token("viewer")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["call_id"], body["outcome"], body["callee_key"], body["profile"]) == (
        "s-1",
        "silent",
        "k" * 16,
        "it",
    )
    [hit] = body["rule_hit_references"]
    assert hit["rule"] == "it-silent-release"
    assert "3 s" in hit["reference"]
    [counted] = body["counted_for"]
    assert (counted["rule"], counted["counts_as"]) == (
        "it-silent-rate-cumulative",
        "numerator and denominator",
    )
    assert counted["window"]["numerator"] == 6
    answered_call = await api.client.get(
        "/v1/calls/w-1", params={"campaign_id": "energia"}, headers=await api.token("viewer")
    )
    [counted] = answered_call.json()["counted_for"]
    assert counted["counts_as"] == "denominator"


async def test_an_unknown_call_is_404_and_the_campaign_is_required(api):  # noqa: F811
    viewer = await api.token("viewer")
    unknown = await api.client.get(
        "/v1/calls/nope", params={"campaign_id": "energia"}, headers=viewer
    )
    assert unknown.status_code == 404
    no_campaign = await api.client.get("/v1/calls/s-1", headers=viewer)
    assert no_campaign.status_code == 422
    assert "campaign_id" in no_campaign.text


# --- uk and us: their own windows, every rule judged per day ----------------------------


async def test_uk_report_days_are_london_days_with_both_rules_and_the_worst_24h(api):  # noqa: F811
    await api.configure("uk-1", {"profile": "uk"})
    d1 = datetime(2026, 1, 14, tzinfo=UTC)  # winter: London = UTC
    await api.feed(
        minute("uk-1", d1 + timedelta(hours=8), live=100, profile="uk"),
        minute("uk-1", d1 + timedelta(hours=23), live=50, abandoned=4, profile="uk"),
        minute("uk-1", d1 + timedelta(hours=25), live=50, abandoned=4, profile="uk"),
        minute("uk-1", d1 + timedelta(hours=44), live=100, profile="uk"),
    )
    body = (
        await _report(api, "json", **{"from": "2026-01-14T00:00:00Z", "to": "2026-01-16T00:00:00Z"})
    ).json()
    [campaign] = body["campaigns"]
    assert (campaign["profile"], campaign["zone"], campaign["primary_rule"]) == (
        "uk",
        "Europe/London",
        "uk-abandoned-rate-calendar-day",
    )
    # Each day: 4 abandoned of 150 = 2.67 %, a warning under both rules judged per day.
    assert [
        (d["date"], d["abandoned"], [(r["rule"], r["verdict"]) for r in d["rules"]])
        for d in campaign["days"]
    ] == [
        (
            day,
            4,
            [
                ("uk-abandoned-rate-calendar-day", "warning"),
                ("uk-abandoned-rate-sliding-24h", "warning"),
            ],
        )
        for day in ("2026-01-14", "2026-01-15")
    ]
    # The regulator's windows are the compliance view's: two days and the worst 24 h
    # (23:00 and 01:00 only: 8 of 100, a violation).
    assert [(w["window"], w["verdict"]) for w in campaign["windows"]] == [
        ("calendar_day", "warning"),
        ("calendar_day", "warning"),
        ("sliding_24h", "violation"),
    ]


async def test_us_report_has_its_30_day_periods_and_new_york_days(api):  # noqa: F811
    await api.configure("us-1", {"profile": "us"})
    start = datetime(2026, 1, 1, 15, 0, tzinfo=UTC)
    await api.feed(
        *(
            minute("us-1", start + timedelta(days=day), live=40, abandoned=1, profile="us")
            for day in range(0, 40, 5)
        )
    )
    body = (
        await _report(api, "pdf", **{"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"})
    ).content
    text = " ".join(
        " ".join(page.extract_text().split()) for page in pypdf.PdfReader(io.BytesIO(body)).pages
    )
    assert "Campaign us-1" in text and "America/New_York" in text
    assert "Daily abandoned rate (us-abandoned-rate-period-30d)" in text
    json_body = (
        await _report(api, "json", **{"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"})
    ).json()
    [campaign] = json_body["campaigns"]
    periods = [(w["window"], w["start"], w["numerator"]) for w in campaign["windows"]]
    # Anchored at the first bucket: days 0..25 (6 buckets), then days 30 and 35.
    assert periods == [
        ("period_30d", "2026-01-01T15:00:00Z", 6),
        ("period_30d", "2026-01-31T15:00:00Z", 2),
    ]
    assert [d["date"] for d in campaign["days"]][:2] == ["2026-01-01", "2026-01-06"]


async def test_a_year_of_days_renders_a_readable_chart(api):  # noqa: F811
    start = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    await api.feed(
        *(
            minute("long", start + timedelta(days=day), live=30, silent=day % 3)
            for day in range(365)
        )
    )
    response = await _report(
        api, "pdf", **{"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    )
    reader = pypdf.PdfReader(io.BytesIO(response.content))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    assert "2025-12-31" in text  # the last day's row
    assert "Daily silent rate" in text


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("text/csv", "text/csv; charset=utf-8"),
        ("application/pdf", "application/pdf"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
    ],
)
async def test_without_format_the_accept_header_chooses(api, accept, media):  # noqa: F811
    await _seed(api)
    response = await api.client.get(
        "/v1/reports/compliance",
        params=PERIOD,
        headers={**await api.token("compliance"), "Accept": accept},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media


async def test_a_profile_without_rate_rules_still_has_its_paris_days(api):  # noqa: F811
    await api.configure("fr-1", {"profile": "fr"})
    # 2026-03-29: the spring DST change in Paris, a 23-hour day.
    await api.feed(minute("fr-1", datetime(2026, 3, 29, 9, 0, tzinfo=UTC), live=7, profile="fr"))
    body = (
        await _report(api, "json", **{"from": "2026-03-28T00:00:00Z", "to": "2026-03-31T00:00:00Z"})
    ).json()
    [campaign] = body["campaigns"]
    assert (campaign["primary_rule"], campaign["windows"]) == (None, [])
    [day] = campaign["days"]
    assert (day["date"], day["start"], day["end"], day["rules"]) == (
        "2026-03-29",
        "2026-03-28T23:00:00Z",
        "2026-03-29T22:00:00Z",
        [],
    )
    pdf = await _report(
        api, "pdf", **{"from": "2026-03-28T00:00:00Z", "to": "2026-03-31T00:00:00Z"}
    )
    text = " ".join(
        " ".join(p.extract_text().split()) for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages
    )
    assert "Campaign fr-1" in text and "No window holds calls." in text
