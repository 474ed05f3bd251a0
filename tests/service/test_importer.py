"""`cdrwatch import`: streaming, gzip, non-UTF-8 bytes, joined rows, checkpoint resume,
dry run, --follow across rotation, and sending through the in-process ingest app."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from services.importer import (
    DryRunSink,
    HttpSink,
    ImportOptions,
    SinkResult,
    main,
    run_import,
)
from services.ingest.formats import load_mapping
from tests.helpers import wait_until_async

if TYPE_CHECKING:
    from tests.service.conftest import IngestHarness

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cdr"
MASTER = FIXTURES / "asterisk/ast_cdr_csv_master_newcdrcolumns_masked.csv"
MOSCOW = {
    "timezone": "Europe/Moscow",
    "country": "RU",
    "callee": ["src"],
    "campaign_default": "stadium",
}


class FakeSink:
    """Accepts everything; records what it received; can fail once after N batches."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_after = fail_after

    @property
    def call_ids(self) -> list[str]:
        return [r["call_id"] for batch in self.batches for r in batch]

    async def send(self, records: list[dict[str, Any]]) -> SinkResult:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise ConnectionError("ingest went away")
        self.batches.append(list(records))
        return SinkResult(accepted=len(records), rejected=[])

    async def close(self) -> None:
        return None


def asterisk_row(n: int, *, start: str = "2026-03-02 10:00:00") -> str:
    uid = f"1772445600.{n}"
    return (
        f'"spring","+3934712{n:05d}","+3934712{n:05d}","out","""x"" <1>","SIP/t-{n:08x}",'
        f'"SIP/agent-1","Dial","SIP/t","{start}","{start}","2026-03-02 10:01:00",60,60,'
        f'"ANSWERED","DOCUMENTATION","{uid}","","","{uid}",{n}\n'
    )


def options(paths: list[Path], **changes: Any) -> ImportOptions:
    mapping = load_mapping(
        "asterisk-cdr-csv",
        overrides={"timezone": "Europe/Rome", "callee": ["dst"], "group_window_rows": 10},
    )
    values: dict[str, Any] = {
        "paths": paths,
        "format": "asterisk-cdr-csv",
        "mapping": mapping,
        "progress": False,
        "batch_size": 10,
    }
    values.update(changes)
    return ImportOptions(**values)


async def test_dry_run_of_the_real_master_csv_names_rejections_by_line() -> None:
    mapping = load_mapping("asterisk-cdr-csv", overrides=MOSCOW)
    opts = ImportOptions(paths=[MASTER], format="asterisk-cdr-csv", mapping=mapping, progress=False)

    summary = await run_import(opts, DryRunSink())

    assert summary.rows == 50
    assert summary.calls == 19
    assert summary.non_utf8_lines == 4  # 0xA5 in caller names
    assert summary.imported == 16
    assert dict(summary.skipped) == {"internal_extension": 1}
    by_reason = summary.rejected_by_reason()
    assert by_reason == {"invalid callee_number": [41, 43]}  # 810... numbers, not valid


async def test_gzip_file_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv.gz"
    with gzip.open(path, "wt") as handle:
        for n in range(35):
            handle.write(asterisk_row(n))
    sink = FakeSink()

    summary = await run_import(options([path]), sink)

    assert summary.imported == 35
    assert len(sink.call_ids) == 35
    assert [len(b) for b in sink.batches] == [10, 10, 10, 5]


async def test_checkpoint_resumes_without_resending(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    path.write_text("".join(asterisk_row(n) for n in range(100)))
    checkpoint = tmp_path / "cp.json"
    failing = FakeSink(fail_after=4)

    with pytest.raises(ConnectionError):
        await run_import(options([path], checkpoint=checkpoint, in_flight=0), failing)
    sent_first = set(failing.call_ids)
    assert 0 < len(sent_first) < 100
    saved = json.loads(checkpoint.read_text())
    assert checkpoint.stat().st_mode & 0o777 == 0o600
    [entry] = saved["files"].values()
    assert entry["offset"] > 0

    second = FakeSink()
    summary = await run_import(options([path], checkpoint=checkpoint, in_flight=0), second)

    resent = set(second.call_ids)
    assert sent_first | resent == {f"1772445600.{n}" for n in range(100)}
    assert len(sent_first & resent) <= 10  # at most the batch that was in flight
    assert summary.imported == len(resent)


async def test_rows_of_one_call_are_joined_and_duplicates_counted(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    row = asterisk_row(1)
    leg = row.replace('"SIP/agent-1"', '"SIP/agent-2"').replace("ANSWERED", "NO ANSWER")
    later_copy = asterisk_row(1)
    path.write_text(row + leg + "".join(asterisk_row(n) for n in range(2, 30)) + later_copy)
    sink = FakeSink()

    summary = await run_import(options([path]), sink)

    assert summary.rows == 31
    assert summary.duplicates == 1
    assert sink.call_ids.count("1772445600.1") == 1


async def test_follow_reads_appended_rows_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    path.write_text(asterisk_row(1))
    sink = FakeSink()
    opts = options(
        [path],
        follow=True,
        follow_poll_seconds=0.05,
        follow_idle_flush_seconds=0.2,
        follow_stop_after_idle_seconds=2.0,
    )
    task = asyncio.create_task(run_import(opts, sink))
    await wait_until_async(lambda: "1772445600.1" in sink.call_ids, timeout=10)
    with path.open("a") as handle:
        handle.write(asterisk_row(2))
    await wait_until_async(lambda: "1772445600.2" in sink.call_ids, timeout=10)
    path.rename(tmp_path / "Master.csv.1")  # logrotate: move, then create
    path.write_text(asterisk_row(3))

    await wait_until_async(lambda: "1772445600.3" in sink.call_ids, timeout=10)
    summary = await asyncio.wait_for(task, 15)

    assert sorted(sink.call_ids) == ["1772445600.1", "1772445600.2", "1772445600.3"]
    assert summary.imported == 3


async def test_import_through_the_ingest_app(ingest: IngestHarness, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    bad = asterisk_row(7).replace("2026-03-02 10:01:00", "2026-03-02 09:00:00")
    path.write_text(asterisk_row(1) + bad + asterisk_row(2))
    token = await ingest.tokens.create("ingest")
    transport = httpx.ASGITransport(app=ingest.client._transport.app)  # type: ignore[attr-defined]
    sink = HttpSink("http://ingest", token, transport=transport)

    summary = await run_import(options([path]), sink)

    assert summary.imported == 2
    [rejected] = summary.rejected
    assert rejected.line == 2
    assert rejected.reason == "invalid ended_at"
    assert sorted(r.call_id for r in ingest.publisher.records) == [
        "1772445600.1",
        "1772445600.2",
    ]


def cli_args(**values: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {
        "paths": [],
        "format": "asterisk-cdr-csv",
        "mapping": None,
        "dry_run": True,
        "follow": False,
        "checkpoint": None,
        "no_checkpoint": False,
        "batch_size": 1000,
        "json": True,
        "quiet": True,
        "ingest_url": "http://127.0.0.1:1",
        "token": None,
    }
    defaults.update(values)
    return argparse.Namespace(**defaults)


def test_cli_dry_run_prints_a_json_summary(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        'timezone = "Europe/Moscow"\ncountry = "RU"\ncallee = ["src"]\n'
        'campaign_default = "stadium"\n'
    )
    out = io.StringIO()

    code = main(cli_args(paths=[str(MASTER)], mapping=str(mapping)), stdout=out)

    assert code == 3  # two calls rejected
    summary = json.loads(out.getvalue())
    assert summary["imported"] == 16
    assert summary["rejected_by_reason"]["invalid callee_number"]["lines"] == [41, 43]
    assert not (tmp_path / "m.toml.cdrwatch-checkpoint").exists()


def test_cli_refuses_a_bad_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text('campain = "x"\n')

    code = main(cli_args(paths=[str(MASTER)], mapping=str(mapping)), stdout=io.StringIO())

    assert code == 2
    assert "campain" in capsys.readouterr().err


def test_cli_without_token_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(cli_args(paths=[str(MASTER)], dry_run=False), stdout=io.StringIO())
    assert code == 2
    assert "--token" in capsys.readouterr().err


async def test_files_with_their_own_header_rows_are_each_read_by_their_header() -> None:
    paths = sorted((FIXTURES / "asterisk").glob("wazo_cel_*.csv"))
    mapping = load_mapping(
        "asterisk-cel",
        overrides={
            "timezone": "Europe/Paris",
            "campaign_default": "c",
            "callee_strip_prefixes": ["**9", "*"],
            "callee_min_digits": 6,
        },
    )
    sink = FakeSink()
    opts = ImportOptions(paths=paths, format="asterisk-cel", mapping=mapping, progress=False)

    summary = await run_import(opts, sink)

    assert summary.calls == 5  # one call per file, whatever its columns
    assert summary.rejected == []
    assert sorted(sink.call_ids) == [
        "1434651125.37",
        "1588609307.2",
        "1757360004.25",
    ]
    assert dict(summary.skipped) == {"internal_extension": 2}


async def test_http_sink_retries_503_and_splits_413() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        lines = request.content.count(b"\n") + 1
        calls.append(lines)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "down"})
        if lines > 2:
            return httpx.Response(413, json={"detail": "too large"})
        return httpx.Response(
            202,
            json={
                "accepted": lines - 1 if lines == 2 else lines,
                "duplicates": 0,
                "rejected": [
                    {"index": 1, "call_id": "b", "errors": [{"field": "x", "message": "bad"}]}
                ]
                if lines == 2
                else [],
            },
        )

    sink = HttpSink("http://ingest", "t", transport=httpx.MockTransport(handler))
    records = [{"call_id": c} for c in "abcd"]

    result = await sink.send(records)
    await sink.close()

    assert calls == [4, 4, 2, 2]  # 503 retried, then 413 split in halves
    assert result.accepted == 2
    assert [(i, c, r) for i, c, r, _ in result.rejected] == [
        (1, "b", "invalid x"),
        (3, "b", "invalid x"),
    ]


async def test_http_sink_stops_on_a_refused_token() -> None:
    from services.importer import FatalSinkError

    sink = HttpSink(
        "http://ingest",
        "t",
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"detail": "no"})),
    )
    with pytest.raises(FatalSinkError, match="401"):
        await sink.send([{"call_id": "a"}])
    await sink.close()


async def test_checkpoint_line_numbers_stay_right_after_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    path.write_text(
        "".join(asterisk_row(n) for n in range(25))
        + asterisk_row(99).replace("2026-03-02 10:01:00", "2026-03-02 09:00:00")
    )
    checkpoint = tmp_path / "cp.json"
    with pytest.raises(ConnectionError):
        await run_import(
            options([path], checkpoint=checkpoint, in_flight=0), FakeSink(fail_after=1)
        )

    summary = await run_import(options([path], checkpoint=checkpoint, in_flight=0), DryRunSink())

    [rejected] = summary.rejected
    assert rejected.line == 26  # counted from the file's start, not from the resume point
