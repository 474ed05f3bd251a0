"""The per-callee histories read back from their change log in bulk, before faust starts.

Why: a worker on a new machine (or after a crash, whose files `LocalStore` drops) had
faust rebuild the per-callee RocksDB files from the whole change log, and faust's table
recovery handles one change-log event at a time through its conductor: about 14,000
records a second here (`bench/worker_ready.py --records 100000`: 98,000 records in 7 s of
a 12.5 s start). A consumer of our own reads the same partitions in fetched batches and
writes each batch into the partition's database in one RocksDB write batch: the records
faust's `Store.apply_changelog_batch` would write, with the same persisted offset, so
faust's recovery then starts after it and reads only what came later.

Why before the group join and for every partition of the change log: in faust the table
hooks of a rebalance run inside the consumer's rebalance callback, when aiokafka sends no
heartbeats, so a restore there longer than the session timeout (6 s) would cost the
worker its membership. Before the join nothing waits on it. A worker of a group of several
is assigned only some partitions; it restores the others too, which costs reading them and
is exact: a partition assigned later is caught up from the offset in its files, as after a
partition moved away and back (`LocalStore`: this change log holds no deletions).

Exactness: each write batch holds a fetched run of records in offset order and the offset
of its last record, so the files never claim an offset whose records they lack. Anything
that goes wrong (broker down, no topic yet, a stall) ends the restore where it is, with a
log line; faust's recovery reads the rest, as it did before this existed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.kafka import confirm_log_ends, reader
from services.common.loops import run_apart

log = logging.getLogger(__name__)

FETCH_BYTES = 8 * 1024 * 1024  # per partition and fetch: ~40,000 histories of ~200 B
STALL_SECONDS = 10.0  # no record for this long while short of the log end: leave the rest
CONNECT_SECONDS = 20.0


@dataclass
class Restored:
    """What a restore did, per partition: records written and the offset reached."""

    records: dict[int, int] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str = ""  # why it ended short of the log end ("" when it did not)

    @property
    def total(self) -> int:
        return sum(self.records.values())


class PartitionFiles:
    """The write side of a faust RocksDB store (`faust.stores.rocksdb.Store`) one partition
    at a time: its database, the offset faust keeps in it, and a write batch that puts
    records and that offset together."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def persisted(self, tp: TopicPartition) -> int | None:
        return self._store.persisted_offset(tp)  # type: ignore[no-any-return]

    def write(self, partition: int, records: Iterable[Any], offset: int) -> None:
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        for record in records:
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        batch.put(self._store.offset_key, str(offset).encode())
        self._store._db_for_partition(partition).write(batch)


async def restore_changelog(bootstrap: str, topic: str, files: PartitionFiles) -> Restored:
    """Read `topic` (all its partitions) from the offset after each one's persisted offset
    to its confirmed log end into `files`."""
    started = time.perf_counter()
    done = Restored()
    consumer = reader(
        bootstrap,
        "cdrwatch-callee-restore",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=4 * FETCH_BYTES,
    )
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            await consumer.start()
            await consumer.topics()  # metadata of every topic, this one's partitions included
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            if not partitions:
                done.stopped = "no change log yet"
                return done
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = await confirm_log_ends(bootstrap, await consumer.end_offsets(tps))
        await _read(consumer, files, ends, done)
    except (Exception, TimeoutError) as exc:  # whatever it is, faust's recovery goes on
        done.stopped = f"{type(exc).__name__}: {exc}"
    finally:
        await consumer.stop()
        done.seconds = time.perf_counter() - started
    return done


async def _read(
    consumer: AIOKafkaConsumer,
    files: PartitionFiles,
    ends: dict[TopicPartition, int],
    done: Restored,
) -> None:
    pending: dict[TopicPartition, int] = {}
    for tp, end in ends.items():
        persisted = files.persisted(tp)
        start = 0 if persisted is None else persisted + 1
        if start < end:
            pending[tp] = end
            done.offsets[tp.partition] = start - 1
    if not pending:
        return
    consumer.assign(list(pending))
    for tp in pending:
        consumer.seek(tp, done.offsets[tp.partition] + 1)
    loop = asyncio.get_running_loop()
    last_progress = loop.time()
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in fetched.items():
            if not records:
                continue
            files.write(tp.partition, records, records[-1].offset)
            done.records[tp.partition] = done.records.get(tp.partition, 0) + len(records)
            done.offsets[tp.partition] = records[-1].offset
            last_progress = loop.time()
            if records[-1].offset + 1 >= pending[tp]:
                del pending[tp]
        if pending and loop.time() - last_progress > STALL_SECONDS:
            done.stopped = "stalled short of " + ", ".join(
                f"{tp.partition}@{end}" for tp, end in sorted(pending.items())
            )
            return


def restore_before_start(bootstrap: str, topic: str, store: Any) -> Restored:
    """Run `restore_changelog` on a loop of its own (faust's worker makes and uses the
    current one) and log what it did."""
    done = run_apart(restore_changelog(bootstrap, topic, PartitionFiles(store)))
    fields: dict[str, object] = {
        "topic": topic,
        "records": done.total,
        "seconds": round(done.seconds, 2),
        "offsets": ",".join(f"{p}@{o}" for p, o in sorted(done.offsets.items())) or "-",
    }
    if done.stopped:
        fields["stopped"] = done.stopped
    log.info("changelog_restored", extra=fields)
    return done
