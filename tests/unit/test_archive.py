"""The durable archive (services.common.archive): what is appended comes back in order,
a discarded batch is gone, settings keep the newest record per key, files are private."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from services.common.archive import ARCHIVE_FILE, Archive, ArchiveError, archive_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_appended_records_come_back_in_publish_order_in_batches(tmp_path: Path) -> None:
    with Archive.in_data_dir(tmp_path) as archive:
        first = archive.append_cdrs([(b"c1", b"v1"), (b"c2", b"v2")])
        second = archive.append_cdrs([(b"c1", b"v3")])
        batches = list(archive.cdr_batches(batch_size=2))
    assert (first.first, first.last, len(first)) == (1, 2, 2)
    assert (second.first, second.last) == (3, 3)
    assert [[(k, v) for _, k, v in batch] for batch in batches] == [
        [(b"c1", b"v1"), (b"c2", b"v2")],
        [(b"c1", b"v3")],
    ]


def test_a_discarded_batch_is_not_replayed_and_its_neighbours_are(tmp_path: Path) -> None:
    with Archive.in_data_dir(tmp_path) as archive:
        archive.append_cdrs([(b"a", b"1")])
        refused = archive.append_cdrs([(b"a", b"2"), (b"a", b"3")])
        archive.append_cdrs([(b"a", b"4")])
        archive.discard(refused)
        values = [v for batch in archive.cdr_batches() for _, _, v in batch]
        assert archive.count_records() == 2
    assert values == [b"1", b"4"]


def test_an_empty_batch_writes_nothing(tmp_path: Path) -> None:
    with Archive.in_data_dir(tmp_path) as archive:
        empty = archive.append_cdrs([])
        archive.discard(empty)
        assert len(empty) == 0
        assert archive.count_records() == 0


def test_settings_keep_the_newest_record_per_key_in_write_order(tmp_path: Path) -> None:
    with Archive.in_data_dir(tmp_path) as archive:
        archive.put_setting(b"default/a", b"a1")
        archive.put_setting(b"default/b", b"b1")
        archive.put_setting(b"default/a", b"a2")
        assert archive.settings() == [(b"default/b", b"b1"), (b"default/a", b"a2")]


def test_the_archive_survives_reopening(tmp_path: Path) -> None:
    with Archive.in_data_dir(tmp_path) as archive:
        archive.append_cdrs([(b"k", b"v")])
        archive.put_setting(b"t/c", b"s")
    with Archive.in_data_dir(tmp_path) as again:
        assert [v for batch in again.cdr_batches() for _, _, v in batch] == [b"v"]
        assert again.settings() == [(b"t/c", b"s")]


def test_files_are_private_and_the_journal_is_durable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Archive.in_data_dir(data_dir) as archive:
        archive.append_cdrs([(b"k", b"v")])
        journal = archive._conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = archive._conn.execute("PRAGMA synchronous").fetchone()[0]
        wal = data_dir / (ARCHIVE_FILE + "-wal")
        assert _mode(wal) == 0o600
    assert journal == "wal"
    assert synchronous == 2  # FULL
    assert _mode(archive_path(data_dir)) == 0o600
    assert _mode(data_dir) == 0o700


def test_concurrent_writers_get_contiguous_batches(tmp_path: Path) -> None:
    archives = [Archive.in_data_dir(tmp_path) for _ in range(3)]
    results: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    lock = threading.Lock()

    def write(archive: Archive, writer: int) -> None:
        for n in range(20):
            records = [(f"{writer}".encode(), f"{writer}-{n}-{i}".encode()) for i in range(5)]
            batch = archive.append_cdrs(records)
            with lock:
                results.append((batch.first, records))
            assert len(batch) == 5

    threads = [threading.Thread(target=write, args=(a, i)) for i, a in enumerate(archives)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = {seq: (k, v) for batch in archives[0].cdr_batches() for seq, k, v in batch}
    for first, records in results:
        assert [stored[first + i] for i in range(5)] == records
    for archive in archives:
        archive.close()


def test_an_unwritable_archive_is_an_archive_error(tmp_path: Path) -> None:
    (tmp_path / ARCHIVE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(ArchiveError):
        Archive.in_data_dir(tmp_path)
