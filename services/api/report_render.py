"""The audit pack as CSV and PDF (the JSON is `ComplianceReport` itself).

CSV (README "Audit pack"): one header, UTF-8 with a byte-order mark (so spreadsheet
programs read it as UTF-8), comma-separated, instants in ISO 8601 UTC (`Z`), dates
`YYYY-MM-DD`, rates as decimal fractions (0.0312). One flat table, `record` says what a
row is: `day` (campaign × calendar day of the profile's zone, judged against the primary
rate rule), `window` (a regulatory window of the compliance view), `alert` (an alert with
its acknowledgement and note) and `call` (a traced call).

PDF (reportlab): a cover (period, campaigns, generation time, profiles and their
versions), then per campaign its day table, the chart of the daily rate of the primary
rule against its cap, the regulatory windows, the violations with their calls, the other
alerts and the rule sources in force.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from html import escape
from typing import Any

from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from schemas.instants import format_instant
from schemas.stats_v1 import COUNT_FIELDS
from services.api.models import AlertDetail
from services.api.reports import CampaignReport, ComplianceReport, ReportDay

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
PDF_MEDIA_TYPE = "application/pdf"
RATES = ("silent_rate", "abandoned_rate", "out_of_hours_rate")
CSV_COLUMNS = (
    "record",
    "tenant_id",
    "campaign_id",
    "profile",
    "profile_reviewed",
    "rule",
    "window",
    "date",
    "start",
    "end",
    "partial",
    *COUNT_FIELDS,
    *RATES,
    "numerator",
    "denominator",
    "value",
    "cap",
    "verdict",
    "headroom",
    "reason",
    "alert_id",
    "state",
    "opened_at",
    "acknowledged_by",
    "acknowledged_at",
    "note",
    "call_id",
    "outcome",
    "rule_hits",
    "callee_key",
    "reference",
)
# Rows of the violations' calls printed per alert, and of traced calls per campaign.
PDF_CALLS_PER_ALERT = 20
PDF_TRACED_CALLS = 200
CHART_MAX_LABELS = 16


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_csv(report: ComplianceReport) -> bytes:
    """The report as one flat CSV table (module docstring), UTF-8 with BOM."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for campaign in report.campaigns:
        for row in _csv_rows(campaign):
            writer.writerow({key: _cell(value) for key, value in row.items()})
    return out.getvalue().encode("utf-8-sig")


def _csv_rows(campaign: CampaignReport) -> Iterable[dict[str, Any]]:
    scope = {
        "tenant_id": campaign.tenant_id,
        "campaign_id": campaign.campaign_id,
        "profile": campaign.profile,
        "profile_reviewed": campaign.profile_reviewed,
    }
    for day in campaign.days:
        row: dict[str, Any] = {
            **scope,
            "record": "day",
            "window": "calendar_day",
            "date": day.date,
            "start": day.start,
            "end": day.end,
            "partial": day.partial,
            **{name: getattr(day, name) for name in (*COUNT_FIELDS, *RATES)},
        }
        primary = _primary(campaign, day)
        if primary is not None:
            row.update(
                rule=primary.rule,
                numerator=primary.numerator,
                denominator=primary.denominator,
                value=primary.value,
                cap=primary.cap,
                verdict=primary.verdict,
                headroom=primary.headroom,
                reason=primary.reason,
            )
        yield row
    for window in campaign.windows:
        yield {
            **scope,
            "record": "window",
            "rule": window.rule,
            "window": window.window,
            "start": window.start,
            "end": window.end,
            "numerator": window.numerator,
            "denominator": window.denominator,
            "value": window.value,
            "cap": window.cap,
            "verdict": window.verdict,
            "headroom": window.headroom,
            "reason": window.reason,
            "reference": window.reference,
        }
    for alert in campaign.alerts:
        yield {
            **scope,
            "record": "alert",
            "rule": alert.rule,
            "start": alert.window.start,
            "end": alert.window.end,
            "numerator": alert.numerator,
            "denominator": alert.denominator,
            "value": alert.value,
            "cap": alert.threshold,
            "verdict": alert.severity,
            "alert_id": alert.id,
            "state": alert.state,
            "opened_at": alert.opened_at,
            "acknowledged_by": alert.acknowledged_by,
            "acknowledged_at": alert.acknowledged_at,
            "note": _notes_text(alert),
            "call_id": " ".join(alert.evidence.call_ids),
            "reference": alert.reference,
        }
    for call in campaign.calls:
        yield {
            **scope,
            "record": "call",
            "start": call.originated_at,
            "end": call.ended_at,
            "call_id": call.call_id,
            "outcome": call.outcome,
            "rule_hits": " ".join(call.rule_hits),
            "callee_key": call.callee_key,
        }


def _primary(campaign: CampaignReport, day: ReportDay) -> Any:
    for rule in day.rules:
        if rule.rule == campaign.primary_rule:
            return rule
    return None


# --- PDF ---------------------------------------------------------------------------------


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    small = ParagraphStyle("small", parent=base["BodyText"], fontSize=7.5, leading=9)
    return {
        "title": base["Title"],
        "h1": base["Heading1"],
        "h2": base["Heading2"],
        "body": base["BodyText"],
        "small": small,
    }


def _p(text: Any, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(_cell(text)), style)


def _percent(value: float | int | None) -> str:
    return "" if value is None else f"{value * 100:.2f} %"


def _table(rows: Sequence[Sequence[Any]], widths: Sequence[float] | None = None) -> Table:
    table = Table(list(rows), colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 7.5),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


def render_pdf(report: ComplianceReport) -> bytes:
    """The report as a PDF an officer hands an auditor (module docstring)."""
    styles = _styles()
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title="cdrwatch compliance report",
        author="cdrwatch",
    )
    story: list[Any] = _cover(report, styles)
    for campaign in report.campaigns:
        story.append(PageBreak())
        story.extend(_campaign(campaign, styles))
    doc.build(story)
    return buffer.getvalue()


def _cover(report: ComplianceReport, styles: dict[str, ParagraphStyle]) -> list[Any]:
    story: list[Any] = [
        _p("Compliance report", styles["title"]),
        _p(
            f"Period: {_cell(report.from_)} to {_cell(report.to)} (UTC, end excluded)",
            styles["body"],
        ),
        _p(f"Tenant: {report.tenant_id}", styles["body"]),
        _p(f"Generated at: {_cell(report.generated_at)} by cdrwatch", styles["body"]),
        Spacer(1, 4 * mm),
    ]
    rows: list[list[Any]] = [
        ["Campaign", "Profile", "Profile reviewed", "Profile file SHA-256", "Zone", "Verdicts"]
    ]
    for campaign in report.campaigns:
        verdicts: list[str] = sorted({w.verdict for w in campaign.windows}) or ["no calls"]
        rows.append(
            [
                _p(campaign.campaign_id, styles["small"]),
                _p(f"{campaign.profile}: {campaign.profile_title}", styles["small"]),
                _cell(campaign.profile_reviewed),
                _p((campaign.profile_sha256 or "")[:16], styles["small"]),
                campaign.zone,
                ", ".join(verdicts),
            ]
        )
    if len(rows) == 1:
        story.append(_p("No campaign in this report.", styles["body"]))
    else:
        story.append(_table(rows, [55 * mm, 75 * mm, 25 * mm, 35 * mm, 35 * mm, 45 * mm]))
    return story


def _campaign(campaign: CampaignReport, styles: dict[str, ParagraphStyle]) -> list[Any]:
    small = styles["small"]
    story: list[Any] = [
        _p(f"Campaign {campaign.campaign_id}", styles["h1"]),
        _p(
            f"Profile {campaign.profile} ({campaign.profile_title}), reviewed "
            f"{_cell(campaign.profile_reviewed)}; calendar days of {campaign.zone}; "
            f"overrides: {campaign.overrides or 'none'}",
            styles["body"],
        ),
        _p("Calendar days", styles["h2"]),
    ]
    if not campaign.days:
        story.append(_p("No calls in the period.", styles["body"]))
    else:
        head = [
            "Day",
            "Attempts",
            "Answered",
            "By person",
            "Silent",
            "Abandoned",
            "Out of hours",
            "Silent rate",
            "Abandoned rate",
            f"Cap ({campaign.primary_rule or '-'})",
            "Day verdict",
            "Headroom",
        ]
        rows: list[list[Any]] = [head]
        for day in campaign.days:
            primary = _primary(campaign, day)
            rows.append(
                [
                    _cell(day.date) + (" (partial)" if day.partial else ""),
                    day.attempts,
                    day.answered,
                    day.answered_by_person,
                    day.silent,
                    day.abandoned,
                    day.out_of_hours,
                    _percent(day.silent_rate),
                    _percent(day.abandoned_rate),
                    _percent(primary.cap) if primary else "",
                    primary.verdict if primary else "",
                    _cell(primary.headroom) if primary else "",
                ]
            )
        story.append(_table(rows))
        story.append(Spacer(1, 4 * mm))
        chart = _chart(campaign)
        if chart is not None:
            story.append(KeepTogether([chart]))
    story.append(_p("Regulatory windows", styles["h2"]))
    rows = [["Rule", "Window", "Start", "End", "Value", "Cap", "Verdict", "Headroom", "Why"]]
    for window in campaign.windows:
        rows.append(
            [
                _p(window.rule, small),
                window.window,
                _cell(window.start),
                _cell(window.end),
                f"{window.numerator}/{window.denominator}",
                _percent(window.cap),
                window.verdict,
                "" if window.verdict == "insufficient" else window.headroom,
                _p(window.reason, small),
            ]
        )
    if len(rows) == 1:
        story.append(_p("No window holds calls.", styles["body"]))
    else:
        story.append(
            _table(
                rows,
                [45 * mm, 20 * mm, 30 * mm, 30 * mm, 18 * mm, 13 * mm, 17 * mm, 14 * mm, 86 * mm],
            )
        )
    story.extend(_violations(campaign, styles))
    story.extend(_traced_calls(campaign, styles))
    story.append(_p("Rule sources in force", styles["h2"]))
    rows = [["Rule or parameter", "Source", "Reviewed"]]
    rows.extend(
        [_p(s.key, small), _p(s.source, small), _cell(s.reviewed)] for s in campaign.rule_sources
    )
    story.append(_table(rows, [50 * mm, 200 * mm, 22 * mm]))
    return story


def _violations(campaign: CampaignReport, styles: dict[str, ParagraphStyle]) -> list[Any]:
    small = styles["small"]
    story: list[Any] = [_p("Alerts and violations", styles["h2"])]
    if not campaign.alerts:
        story.append(_p("No alert in the period.", styles["body"]))
        return story
    calls = {call.call_id: call for call in campaign.calls}
    for alert in campaign.alerts:
        ack = (
            f"acknowledged by {alert.acknowledged_by} at {_cell(alert.acknowledged_at)}"
            if alert.acknowledged_at
            else "not acknowledged"
        )
        lines = [
            _p(
                f"{alert.severity.upper()} {alert.rule} ({alert.state}), window "
                f"{_cell(alert.window.start)} to {_cell(alert.window.end)}: "
                f"{alert.numerator}/{alert.denominator} = {_percent(alert.value)} against "
                f"{_percent(alert.threshold)}; {ack}"
                + (f"; notes: {_notes_text(alert)}" if _notes_text(alert) else ""),
                styles["body"],
            ),
        ]
        if alert.history:
            history = "; ".join(
                f"{_cell(h.recorded_at)} {h.state} {h.severity} {h.numerator}/{h.denominator}"
                for h in alert.history
            )
            lines.append(_p(f"History: {history}", small))
        if alert.reference:
            lines.append(_p(f"Reference: {alert.reference}", small))
        evidence = alert.evidence.call_ids[:PDF_CALLS_PER_ALERT]
        if evidence:
            rows: list[list[Any]] = [["Call", "Time", "Outcome", "Rules", "Callee (pseudonym)"]]
            for call_id in evidence:
                call = calls.get(call_id)
                rows.append(
                    [
                        _p(call_id, small),
                        _cell(call.originated_at) if call else "",
                        _cell(call.outcome) if call else "(not traced in the period)",
                        _p(" ".join(call.rule_hits) if call else "", small),
                        _p((call.callee_key or "") if call else "", small),
                    ]
                )
            lines.append(_table(rows, [50 * mm, 40 * mm, 40 * mm, 70 * mm, 70 * mm]))
        lines.append(Spacer(1, 3 * mm))
        story.extend(lines)
    return story


def _traced_calls(campaign: CampaignReport, styles: dict[str, ParagraphStyle]) -> list[Any]:
    small = styles["small"]
    story: list[Any] = [_p("Traced calls (silent, abandoned, or breaking a rule)", styles["h2"])]
    shown = campaign.calls[:PDF_TRACED_CALLS]
    if not shown:
        story.append(_p("No traced call in the period.", styles["body"]))
        return story
    more = len(campaign.calls) - len(shown)
    if more or campaign.calls_truncated:
        story.append(
            _p(
                f"The first {len(shown)} are listed; the JSON and CSV formats and "
                "GET /v1/calls hold the rest.",
                small,
            )
        )
    rows: list[list[Any]] = [["Time", "Call", "Outcome", "Rules", "Callee (pseudonym)"]]
    rows.extend(
        [
            _cell(call.originated_at),
            _p(call.call_id, small),
            _cell(call.outcome),
            _p(" ".join(call.rule_hits), small),
            _p(call.callee_key or "", small),
        ]
        for call in shown
    )
    story.append(_table(rows, [40 * mm, 50 * mm, 30 * mm, 80 * mm, 70 * mm]))
    return story


def _chart(campaign: CampaignReport) -> Drawing | None:
    """The daily rate of the primary rule's metric against its cap (reportlab.graphics)."""
    points: list[tuple[float, float]] = []
    cap = None
    metric = None
    labels: dict[int, str] = {}
    first = campaign.days[0].date if campaign.days else None
    for day in campaign.days:
        primary = _primary(campaign, day)
        if primary is None or first is None:
            continue
        cap, metric = float(primary.cap), primary.metric
        if primary.value is not None:  # a day without answered calls has no rate
            # x is days since the first day: a gap of days without calls shows as one.
            x = (day.date - first).days
            points.append((x, float(primary.value) * 100))
            labels[x] = day.date.strftime("%m-%d")
    if not points or cap is None:
        return None
    width, height = 250 * mm, 70 * mm
    drawing = Drawing(width, height)
    plot = LinePlot()
    plot.x, plot.y = 20 * mm, 12 * mm
    plot.width, plot.height = width - 30 * mm, height - 22 * mm
    cap_line: list[tuple[float, float]] = [(points[0][0], cap * 100), (points[-1][0], cap * 100)]
    if len(points) == 1:
        cap_line = [(points[0][0] - 0.5, cap * 100), (points[0][0] + 0.5, cap * 100)]
    plot.data = [points, cap_line]
    plot.lines[0].strokeColor = colors.HexColor("#1f5fa8")
    plot.lines[0].symbol = makeMarker("FilledCircle")
    plot.lines[1].strokeColor = colors.HexColor("#c0392b")
    plot.lines[1].strokeDashArray = [4, 2]
    plot.yValueAxis.valueMin = 0
    top = max(max(v for _, v in points), cap * 100) * 1.2
    plot.yValueAxis.valueMax = top
    plot.yValueAxis.labelTextFormat = "%.1f %%"
    every = max(1, -(-len(points) // CHART_MAX_LABELS))  # at most CHART_MAX_LABELS labels
    plot.xValueAxis.valueSteps = [i for i, _ in points][::every]
    plot.xValueAxis.labelTextFormat = lambda i: labels.get(int(i), "")
    plot.xValueAxis.labels.fontSize = 6
    drawing.add(plot)
    drawing.add(
        String(
            15 * mm,
            height - 6 * mm,
            f"Daily {metric} rate ({campaign.primary_rule}) against the cap "
            f"{cap * 100:.2f} % (dashed)",
            fontName="Helvetica-Bold",
            fontSize=9,
        )
    )
    return drawing


def _notes_text(alert: AlertDetail) -> str:
    """Every note with its author and time (a note given with the ack is one of them)."""
    if not alert.notes:
        return alert.ack_note or ""
    return " | ".join(f"{n.author}, {_cell(n.recorded_at)}: {n.note}" for n in alert.notes)
