"""`cdrwatch import PATH... --format F`: dialer files into cdrwatch through the ingest API.

Files are streamed line by line (gzip too, by name or magic bytes), bytes that are not
UTF-8 are read as cp1252 (counted, never fatal), rows of one call are joined by the format's
mapper, and the mapped calls go to `POST /v1/cdrs` in NDJSON batches with an ingest token.
The ingest is the one place that validates, normalises and pseudonymises (and a 202 there
means the broker has the records), so the importer sends through it rather than to Kafka;
a dialer that wants Kafka writes to `cdrwatch.cdrs.raw.v1` (docs/integrations/README.md).

- `--dry-run`: parse, map and validate (the ingest's own checks, in process), send nothing;
- a checkpoint file (`--checkpoint`, default `<first path>.cdrwatch-checkpoint`) holds per
  file the byte offset and line before which every call was acknowledged: a re-run resumes
  there and re-sends nothing acknowledged (an interrupted batch is re-sent; the detector's
  dedup on call_id absorbs it);
- `--follow`: after the end, keep reading the (single) file as it grows, reopening it when
  it is rotated (a new inode, or a size below the offset), flushing calls after an idle gap;
- progress (rows, rows/s, %, ETA) on stderr; a summary at the end: imported, duplicates
  (the same call_id again in this run), skipped by reason, rejected by reason with lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import secrets
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import orjson

from services.common.gc_tuning import tune_for_throughput
from services.ingest.formats import create_mapper, decode_line
from services.ingest.formats.base import Mapped, Mapping, Outcome, Rejected, load_mapping

CHECKPOINT_SUFFIX = ".cdrwatch-checkpoint"
_SHOWN_PER_REASON = 20


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordRejection:
    path: str
    line: int
    call_id: str | None
    reason: str
    message: str


@dataclass
class Summary:
    rows: int = 0
    calls: int = 0
    imported: int = 0
    duplicates: int = 0
    non_utf8_lines: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: list[RecordRejection] = field(default_factory=list)

    def rejected_by_reason(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for item in self.rejected:
            out.setdefault(item.reason, []).append(item.line)
        return out

    def rejected_places(self) -> dict[str, list[str]]:
        """Per reason, `line` (one file) or `file:line` (several)."""
        several = len({item.path for item in self.rejected}) > 1
        out: dict[str, list[str]] = {}
        for item in self.rejected:
            place = f"{Path(item.path).name}:{item.line}" if several else str(item.line)
            out.setdefault(item.reason, []).append(place)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "calls": self.calls,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "skipped": dict(self.skipped),
            "non_utf8_lines": self.non_utf8_lines,
            "rejected": len(self.rejected),
            "rejected_by_reason": {
                reason: {"count": len(lines), "lines": lines[:1000]}
                for reason, lines in self.rejected_by_reason().items()
            },
            "rejected_records": [
                {
                    "file": r.path,
                    "line": r.line,
                    "call_id": r.call_id,
                    "reason": r.reason,
                    "message": r.message,
                }
                for r in self.rejected[:1000]
            ],
        }

    def render(self, dry_run: bool) -> str:
        verb = "valid (dry run, nothing sent)" if dry_run else "imported"
        lines = [
            f"rows read: {self.rows}   calls: {self.calls}",
            f"{verb}: {self.imported}",
            f"duplicates (same call_id again): {self.duplicates}",
            "skipped (not a callee call): "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "0"),
            f"rejected: {len(self.rejected)}",
        ]
        for reason, found in sorted(self.rejected_places().items()):
            shown = ", ".join(found[:_SHOWN_PER_REASON])
            more = f" (+{len(found) - _SHOWN_PER_REASON} more)" if len(found) > 20 else ""
            lines.append(f"  {reason}: {len(found)} at line {shown}{more}")
        if self.non_utf8_lines:
            lines.append(f"lines with non-UTF-8 bytes (read as cp1252): {self.non_utf8_lines}")
        return "\n".join(lines)


# --- sinks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkResult:
    accepted: int
    rejected: list[tuple[int, str | None, str, str]]  # index, call_id, reason, message


class Sink(Protocol):
    async def send(self, records: list[dict[str, Any]]) -> SinkResult: ...

    async def close(self) -> None: ...


class FatalSinkError(Exception):
    """The ingest refused the importer itself (auth, unknown route): stop, nothing to retry."""


def _reason_of(errors: list[dict[str, Any]]) -> tuple[str, str]:
    if not errors:
        return "invalid", "rejected"
    field_name = str(errors[0].get("field", "(record)"))
    message = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
    return f"invalid {field_name}", message


_WORKER_VALIDATOR: Any = None


def _make_validator(future_tolerance_seconds: int) -> Callable[[list[dict[str, Any]]], SinkResult]:
    """A function validating a batch with the ingest's own code (a throwaway pseudonym key:
    nothing leaves the process)."""
    from services.ingest.normalize import Normalizer
    from services.ingest.service import RecordPolicy, validate_items

    normalizer = Normalizer(
        secrets.token_hex(16).encode(),
        lambda: datetime.now(UTC),
        timedelta(seconds=future_tolerance_seconds),
    )
    policy = RecordPolicy()

    def validate(records: list[dict[str, Any]]) -> SinkResult:
        outcome = validate_items(records, normalizer, source="http", policy=policy)
        rejected = []
        for item in outcome.rejected:
            reason, message = _reason_of([e.model_dump() for e in item.errors])
            rejected.append((item.index, item.call_id, reason, message))
        return SinkResult(accepted=outcome.accepted + outcome.duplicates, rejected=rejected)

    return validate


def _init_worker(future_tolerance_seconds: int) -> None:
    global _WORKER_VALIDATOR  # noqa: PLW0603 - one validator per worker process
    _WORKER_VALIDATOR = _make_validator(future_tolerance_seconds)
    tune_for_throughput()


def _validate_in_worker(records: list[dict[str, Any]]) -> SinkResult:
    return _WORKER_VALIDATOR(records)  # type: ignore[no-any-return]


class DryRunSink:
    """Validates with the ingest's own code, sends nothing. With `workers` > 1 the batches
    are validated in that many processes while this one reads and maps (validation, the
    phone-number checks above all, costs several times the mapping)."""

    def __init__(self, future_tolerance_seconds: int = 3600, workers: int = 1) -> None:
        self._validate = _make_validator(future_tolerance_seconds)
        self._pool: Any = None
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                workers, initializer=_init_worker, initargs=(future_tolerance_seconds,)
            )

    async def send(self, records: list[dict[str, Any]]) -> SinkResult:
        if self._pool is None:
            return self._validate(records)
        loop = asyncio.get_running_loop()
        result: SinkResult = await loop.run_in_executor(self._pool, _validate_in_worker, records)
        return result

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class HttpSink:
    """NDJSON batches to `POST /v1/cdrs` with a Bearer token. 503 (and connection errors)
    are retried with back-off honouring Retry-After; 413 splits the batch; 401/403/404
    stop the import."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        max_attempts: int = 30,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            transport=transport,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
            timeout=timeout,
        )
        self._max_attempts = max_attempts

    async def send(self, records: list[dict[str, Any]]) -> SinkResult:
        body = b"\n".join(orjson.dumps(r) for r in records)
        delay = 0.5
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._client.post("/v1/cdrs", content=body)
            except httpx.TransportError:
                if attempt == self._max_attempts:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            data = _json_or_none(response) if response.status_code in (202, 422) else None
            if isinstance(data, dict) and "accepted" in data:
                rejected = []
                for item in data.get("rejected", []):
                    reason, message = _reason_of(item.get("errors", []))
                    rejected.append((int(item["index"]), item.get("call_id"), reason, message))
                return SinkResult(accepted=int(data.get("accepted", 0)), rejected=rejected)
            if response.status_code == 413 and len(records) > 1:
                half = len(records) // 2
                first = await self.send(records[:half])
                second = await self.send(records[half:])
                return SinkResult(
                    accepted=first.accepted + second.accepted,
                    rejected=first.rejected
                    + [(i + half, c, r, m) for i, c, r, m in second.rejected],
                )
            if response.status_code in (503, 502, 504, 429) and attempt < self._max_attempts:
                retry_after = response.headers.get("Retry-After", "")
                await asyncio.sleep(float(retry_after) if retry_after.isdigit() else delay)
                delay = min(delay * 2, 10.0)
                continue
            raise FatalSinkError(f"ingest answered {response.status_code}: {response.text[:300]}")
        raise FatalSinkError("ingest unavailable: retries exhausted")

    async def close(self) -> None:
        await self._client.aclose()


# --- checkpoint ------------------------------------------------------------------------------


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class Checkpoint:
    """Per file: the byte offset (of the decompressed text) and line number before which
    every call was acknowledged, and the file's inode. Written atomically, 0600."""

    def __init__(self, path: Path | None, format_name: str) -> None:
        self.path = path
        self.format = format_name
        self.files: dict[str, dict[str, int]] = {}
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            if data.get("format") not in (None, format_name):
                raise ValueError(
                    f"checkpoint {path} is for format {data.get('format')}, not {format_name}"
                )
            self.files = data.get("files", {})

    def position(self, file: Path) -> tuple[int, int]:
        entry = self.files.get(str(file.resolve()))
        if entry is None:
            return 0, 0
        with contextlib.suppress(OSError):
            if file.stat().st_ino != entry.get("inode"):
                return 0, 0  # another file now has this name (rotated): start over
        return int(entry["offset"]), int(entry["line"])

    def save(self, file: Path, offset: int, line: int) -> None:
        if self.path is None:
            return
        try:
            inode = file.stat().st_ino
        except OSError:
            inode = 0
        self.files[str(file.resolve())] = {"offset": offset, "line": line, "inode": inode}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"version": 1, "format": self.format, "files": self.files}, handle)
        os.replace(tmp, self.path)


# --- reading ---------------------------------------------------------------------------------


def open_binary(path: Path) -> IO[bytes]:
    handle = path.open("rb")
    magic = handle.read(2)
    handle.seek(0)
    if magic == b"\x1f\x8b" or path.suffix == ".gz":
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def _raw_position(handle: IO[bytes]) -> int:
    inner = getattr(handle, "fileobj", None)
    target = inner if inner is not None else handle
    try:
        return int(target.tell())
    except (OSError, ValueError):
        return 0


class Progress:
    def __init__(self, total_bytes: int, enabled: bool, stream: IO[str] | None = None) -> None:
        self.total = total_bytes
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._last = 0.0
        self.done_bytes = 0  # of files already finished

    def update(self, rows: int, position: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = rows / elapsed
        done = self.done_bytes + position
        text = f"\r{rows:,} rows  {rate:,.0f} rows/s"
        if self.total:
            fraction = min(done / self.total, 1.0)
            eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
            text += f"  {fraction:6.1%}  ETA {eta:,.0f} s"
        self.stream.write(text + " " * 4)
        self.stream.flush()

    def finish(self, rows: int) -> None:
        if self.enabled:
            self.done_bytes = self.total
            self.update(rows, 0, force=True)
            self.stream.write("\n")
            self.stream.flush()


# --- the import ------------------------------------------------------------------------------


@dataclass
class ImportOptions:
    paths: list[Path]
    format: str
    mapping: Mapping | None = None
    dry_run: bool = False
    follow: bool = False
    checkpoint: Path | None = None
    batch_size: int = 1000
    in_flight: int = 2
    progress: bool = True
    follow_poll_seconds: float = 0.5
    follow_idle_flush_seconds: float = 5.0
    follow_stop_after_idle_seconds: float | None = None  # tests; None: until interrupted


@dataclass
class _Pending:
    """A batch handed to the sink, with where its calls came from."""

    task: asyncio.Task[SinkResult]
    sources: list[tuple[str, Mapped]]


class Importer:
    def __init__(self, options: ImportOptions, sink: Sink) -> None:
        self.options = options
        self.sink = sink
        self.mapping = options.mapping or load_mapping(options.format)
        self.mapper = create_mapper(options.format, self.mapping)
        self.summary = Summary()
        self.seen: set[str] = set()
        self.checkpoint = Checkpoint(options.checkpoint, options.format)
        self.batch: list[tuple[str, Mapped]] = []
        self.in_flight: deque[_Pending] = deque()
        self.current_file: Path | None = None

    # outcomes -> batches

    def _take(self, path: str, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.summary.calls += 1
            if isinstance(outcome, Mapped):
                call_id = str(outcome.record.get("call_id", ""))
                key = f"{outcome.record.get('tenant_id') or ''}\x1f{call_id}"
                if call_id and key in self.seen:
                    self.summary.duplicates += 1
                    continue
                if call_id:
                    self.seen.add(key)
                self.batch.append((path, outcome))
            elif isinstance(outcome, Rejected):
                self.summary.rejected.append(
                    RecordRejection(
                        path, outcome.line, outcome.call_id, outcome.reason, outcome.message
                    )
                )
            else:
                self.summary.skipped[outcome.reason] += 1

    async def _ship(self, *, final: bool = False) -> None:
        while len(self.batch) >= self.options.batch_size or (final and self.batch):
            chunk = self.batch[: self.options.batch_size]
            del self.batch[: self.options.batch_size]
            task = asyncio.create_task(self.sink.send([m.record for _, m in chunk]))
            self.in_flight.append(_Pending(task, chunk))
            while len(self.in_flight) > self.options.in_flight:
                await self._settle_oldest()
        if final:
            while self.in_flight:
                await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        pending = self.in_flight.popleft()
        result = await pending.task
        self.summary.imported += result.accepted
        for index, call_id, reason, message in result.rejected:
            path, source = pending.sources[index]
            self.summary.rejected.append(
                RecordRejection(path, source.line, call_id, reason, message)
            )

    def _safe_position(self, position: int, line_no: int) -> tuple[int, int]:
        """(offset, line) before which every call is acknowledged: the current position,
        unless a call read before it is still open in the mapper, buffered or in flight."""
        candidates = [(position, line_no)]
        pending = self.mapper.pending_position()
        if pending is not None:
            candidates.append((pending[0], pending[1] - 1))
        candidates.extend((m.offset, m.line - 1) for _, m in self.batch)
        candidates.extend((m.offset, m.line - 1) for p in self.in_flight for _, m in p.sources)
        return min(candidates)

    # files

    async def run(self) -> Summary:
        total = 0
        for path in self.options.paths:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        progress = Progress(total, self.options.progress)
        try:
            if self.mapper.document:
                await self._run_documents(progress)
            else:
                for index, path in enumerate(self.options.paths):
                    follow = self.options.follow and index == len(self.options.paths) - 1
                    await self._run_lines(path, progress, follow=follow)
                    with contextlib.suppress(OSError):
                        progress.done_bytes += path.stat().st_size
        finally:
            progress.finish(self.summary.rows)
        return self.summary

    async def _run_documents(self, progress: Progress) -> None:
        files = []
        for path in self.options.paths:
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            )
        for path in files:
            offset, _ = self.checkpoint.position(path)
            if offset > 0:
                continue  # already acknowledged
            with open_binary(path) as handle:
                body = handle.read()
            self.summary.rows += 1
            try:
                outcomes: list[Outcome] = list(self.mapper.map_document(body))
            except Exception as exc:  # an input nobody foresaw: that file's rejection
                outcomes = [Rejected("unmappable", type(exc).__name__)]
            self._take(str(path), outcomes)
            await self._ship(final=True)
            self.checkpoint.save(path, len(body) or 1, 1)
            progress.update(self.summary.rows, 0)

    async def _run_lines(self, path: Path, progress: Progress, *, follow: bool) -> None:
        start_offset, start_line = self.checkpoint.position(path)
        handle = open_binary(path)
        inode = _inode(path)
        try:
            if start_offset:
                header = _decode(handle.readline())[0] if self.mapping.header else None
                self.mapper.start_file(header)
                handle.seek(start_offset)
            else:
                self.mapper.start_file()
            offset, line_no = start_offset, start_line
            name = str(path)
            partial = b""
            idle_since = time.monotonic()
            flushed_idle = True
            while True:
                got_any = False
                for raw in handle:
                    if not raw.endswith(b"\n") and follow:
                        partial = raw  # the writer is mid-line: wait for the rest
                        break
                    got_any = True
                    if partial:
                        raw, partial = partial + raw, b""
                    line_no += 1
                    self.summary.rows += 1
                    text, clean = _decode(raw)
                    if not clean:
                        self.summary.non_utf8_lines += 1
                    self._take(name, self._feed(text, line_no, offset))
                    offset += len(raw)
                    if len(self.batch) >= self.options.batch_size:
                        await self._ship()
                        self._save(path, offset, line_no)
                    if not line_no % 1024:
                        progress.update(self.summary.rows, _raw_position(handle))
                if partial and not follow:
                    break
                if not follow:
                    break
                # --follow: the file's end for now
                if got_any:
                    idle_since, flushed_idle = time.monotonic(), False
                    await self._ship()
                    self._save(path, offset, line_no)
                idle = time.monotonic() - idle_since
                if not flushed_idle and idle >= self.options.follow_idle_flush_seconds:
                    self._take(name, self.mapper.flush())
                    await self._ship(final=True)
                    self._save(path, offset, line_no)
                    flushed_idle = True
                stop_after = self.options.follow_stop_after_idle_seconds
                if stop_after is not None and idle >= stop_after:
                    break
                rotated = _rotated(path, inode, offset)
                if rotated:
                    handle.close()
                    handle = open_binary(path)
                    inode = _inode(path)
                    offset, line_no, partial = 0, 0, b""
                    self.mapper.start_file()
                    continue
                await asyncio.sleep(self.options.follow_poll_seconds)
            self._take(name, self.mapper.flush())
            await self._ship(final=True)
            self._save(path, offset, line_no)
        finally:
            handle.close()

    def _feed(self, text: str, line_no: int, offset: int) -> list[Outcome]:
        try:
            outcomes: list[Outcome] = self.mapper.feed(text, line_no, offset)
        except Exception as exc:  # one line's failure must not stop the import
            return [Rejected("unmappable", type(exc).__name__, line_no, offset)]
        return outcomes

    def _save(self, path: Path, position: int, line_no: int) -> None:
        offset, line = self._safe_position(position, line_no)
        self.checkpoint.save(path, offset, max(line, 0))


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8").rstrip("\r\n"), True
    except UnicodeDecodeError:
        return decode_line(raw), False


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except OSError:
        return -1


def _rotated(path: Path, inode: int, offset: int) -> bool:
    """The name now points at another file (logrotate's create/move) or the file shrank
    (copytruncate)."""
    try:
        stat = path.stat()
    except OSError:
        return False  # between the move and the create: keep the old handle for now
    return stat.st_ino != inode or stat.st_size < offset


async def run_import(options: ImportOptions, sink: Sink) -> Summary:
    importer = Importer(options, sink)
    try:
        return await importer.run()
    finally:
        await sink.close()


def main(
    args: Any,
    *,
    stdout: IO[str] | None = None,
    make_sink: Callable[[], Sink] | None = None,
) -> int:
    """The CLI: exit 0 when every call was imported or skipped, 3 when some were rejected,
    2 when the import could not run (bad mapping, refused token)."""
    out = stdout or sys.stdout
    try:
        mapping = load_mapping(args.format, Path(args.mapping) if args.mapping else None)
        paths = [Path(p) for p in args.paths]
        checkpoint = (
            None
            if args.no_checkpoint or args.dry_run
            else Path(args.checkpoint or str(paths[0]) + CHECKPOINT_SUFFIX)
        )
        options = ImportOptions(
            paths=paths,
            format=args.format,
            mapping=mapping,
            dry_run=args.dry_run,
            follow=args.follow,
            checkpoint=checkpoint,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        if make_sink is not None:
            sink = make_sink()
        elif args.dry_run:
            workers = len(os.sched_getaffinity(0))
            sink = DryRunSink(workers=workers)
            options.in_flight = max(options.in_flight, workers + 1)
        else:
            if not args.token:
                sys.stderr.write(
                    "cdrwatch import: --token (or CDRWATCH_IMPORT_TOKEN) is required" + "\n"
                )
                return 2
            sink = HttpSink(args.ingest_url, args.token)
        summary = asyncio.run(run_import(options, sink))
    except (ValueError, FatalSinkError, OSError) as exc:
        sys.stderr.write(f"cdrwatch import: {exc}" + "\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "cdrwatch import: interrupted; re-run to resume from the checkpoint" + "\n"
        )
        return 130
    if args.json:
        out.write(json.dumps(summary.as_dict(), indent=2) + "\n")
    else:
        out.write(summary.render(args.dry_run) + "\n")
    return 3 if summary.rejected else 0
