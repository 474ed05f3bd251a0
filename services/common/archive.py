"""The durable archive of the embedded stack: `<data_dir>/archive.sqlite3`.

The embedded Tansu broker keeps its topics in memory, so a broker that dies or a stack
that restarts would forget every accepted CDR and every campaign setting. The archive
keeps, on disk, exactly what was published:

- `cdrs`: every Kafka record produced to `cdrwatch.cdrs.v1` (a `CdrBatchV1` envelope of
  normalised, pseudonymised CDRs, or one CDR as archived before envelopes), key and value
  bytes, in publish order (`seq`). Repeats are kept as they were published; the
  detector's dedup on (tenant, call_id) makes a replay count each call once.
- `settings`: the newest record per key of `cdrwatch.campaigns.v1` (the topic is compacted
  too, so the latest per key is all a replay needs).

`services.common.replay` publishes it into a fresh broker when `cdrwatch up` starts or
restarts the broker. With a durable Kafka (docker-compose) the archive is off
(`CDRWATCH_ARCHIVE=false`): Kafka itself is the log.

Durability: WAL journal with `synchronous=FULL`, so a batch is on disk when `append_cdrs`
returns. Files are created 0600 in a 0700 directory (SQLite gives its -wal and -shm files
the database file's mode). Several processes (ingest, api) write the same file; SQLite's
lock serialises them (busy timeout 30 s).

Order of writes (ingest, see services.ingest.service.ArchivingPublisher): a batch is
archived first, then published; when the broker does not acknowledge it, its rows are
removed again (`discard`) before the 503. So nothing answered 202 is missing from the
archive, and a record the client was told to retry is not replayed (unless the process
died between the two steps: then the client never got an answer, retries, and the dedup
absorbs the copy).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.settings import CommonSettings

ARCHIVE_FILE = "archive.sqlite3"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cdrs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        key BLOB,
        value BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS settings (
        key BLOB PRIMARY KEY,
        value BLOB NOT NULL,
        seq INTEGER NOT NULL
    )""",
)


class ArchiveError(Exception):
    """The archive could not be read or written."""


@dataclass(frozen=True, slots=True)
class ArchivedBatch:
    """The rows one `append_cdrs` wrote: seq in [first, last]; empty when last < first."""

    first: int
    last: int

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)


def archive_path(data_dir: Path) -> Path:
    return data_dir / ARCHIVE_FILE


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


class Archive:
    """One connection to the archive file, safe to use from several threads (a lock
    serialises the calls; async callers run them with `asyncio.to_thread`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        _create_private(self.path)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open the archive {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Archive:
        return cls(archive_path(data_dir))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ArchiveError(f"archive {self.path}: {exc}") from exc

    # -- CDRs ----------------------------------------------------------------------------

    def append_cdrs(self, records: Sequence[tuple[bytes | None, bytes]]) -> ArchivedBatch:
        """Write (key, value) records in one durable transaction; their seq range."""
        if not records:
            return ArchivedBatch(1, 0)
        with self._transaction() as conn:
            before = conn.execute("SELECT coalesce(max(seq), 0) FROM cdrs").fetchone()[0]
            conn.executemany("INSERT INTO cdrs (key, value) VALUES (?, ?)", records)
            last = conn.execute("SELECT max(seq) FROM cdrs").fetchone()[0]
        # BEGIN IMMEDIATE holds the write lock: the rows of this batch are contiguous.
        return ArchivedBatch(int(before) + 1, int(last))

    def discard(self, batch: ArchivedBatch) -> None:
        """Remove a batch the broker did not acknowledge."""
        if not len(batch):
            return
        with self._transaction() as conn:
            conn.execute("DELETE FROM cdrs WHERE seq BETWEEN ? AND ?", (batch.first, batch.last))

    def cdr_batches(
        self, batch_size: int = 5000, after: int = 0
    ) -> Iterator[list[tuple[int, bytes | None, bytes]]]:
        """Every archived CDR in publish order, `batch_size` rows at a time (seq, key,
        value); rows appended meanwhile are included."""
        while True:
            with self._lock:
                try:
                    rows = self._conn.execute(
                        "SELECT seq, key, value FROM cdrs WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after, batch_size),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise ArchiveError(f"archive {self.path}: {exc}") from exc
            if not rows:
                return
            after = rows[-1][0]
            yield [(int(seq), key, value) for seq, key, value in rows]

    def count_records(self) -> int:
        """Rows of `cdrs`: Kafka records as published (envelopes), not CDRs."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM cdrs").fetchone()[0])

    # -- campaign settings ---------------------------------------------------------------

    def put_setting(self, key: bytes, value: bytes) -> None:
        """Keep `value` as the newest record of `key`."""
        with self._transaction() as conn:
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM settings").fetchone()[0]
            conn.execute(
                "INSERT INTO settings (key, value, seq) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, seq = excluded.seq",
                (key, value, seq),
            )

    def put_settings(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            self.put_setting(key, value)

    def settings(self) -> list[tuple[bytes, bytes]]:
        """The newest record of every key, in the order they were last written."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM settings ORDER BY seq").fetchall()
        return [(bytes(key), bytes(value)) for key, value in rows]


def open_archive(settings: CommonSettings) -> Archive | None:
    """The archive of the settings' data directory when `archive` is on, else None."""
    return Archive.in_data_dir(settings.data_dir) if settings.archive else None
