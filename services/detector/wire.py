"""Messages between the detector's own stages, batched per destination partition.

The per-callee stage reads calls re-keyed by (tenant, pseudonymised callee). One Kafka
record per call cost a producer send, a consumer fetch and a faust agent step per CDR
(issue 7: faust's per-message machinery is the wall at 4-13k messages/s), so the main
stage sends ONE record per destination partition and batch, the envelope

    {"v": 1, "calls": [[callee key, history row], ...]}

where a history row is `lockouts.to_json`'s compact row. The partition of each call is
the one a keyed send would have chosen (murmur2 of the callee key, as aiokafka and the
Java client): the callee table is co-partitioned with this topic, so a callee's history
stays in the partition its calls arrive on, before and after this change. A record of the
earlier form (one row, keyed by the callee key) is still read, so a topic written by an
older detector drains after an upgrade.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from services.detector.core import lockouts
from services.detector.core.lockouts import CalleeCall

CALLEE_BATCH_VERSION = 1
# Calls per envelope: a row is ~80 bytes, so a record stays far below Kafka's 1 MB default.
MAX_CALLEES_PER_MESSAGE = 2000

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`, aiokafka's `murmur2`), with the
    same result for every input (tests/unit/test_wire.py checks it against aiokafka's);
    written over 32-bit words read at once, because the callee partition is computed for
    every CDR with a callee rule and aiokafka's byte-wise loop was 5% of the main stage."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[words * 4 :]
    if tail:
        if len(tail) >= 3:
            h ^= tail[2] << 16
        if len(tail) >= 2:
            h ^= tail[1] << 8
        h = ((h ^ tail[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class CalleePartitions:
    """The partition of a callee key among `count` partitions (memoised per key)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._of: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        partition = self._of.get(key)
        if partition is None:
            if len(self._of) > 100_000:
                self._of.clear()
            partition = self._of[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % self._count
        return partition


def callee_batches(
    calls: Iterable[tuple[str, CalleeCall, bool]], partition_of: CalleePartitions
) -> Iterator[tuple[int, bool, bytes]]:
    """(partition, replay mark, envelope) for (callee key, call, replayed) in order: one
    envelope per partition and replay mark, at most MAX_CALLEES_PER_MESSAGE calls each."""
    grouped: dict[tuple[int, bool], list[list[Any]]] = {}
    for key, call, replayed in calls:
        row = lockouts.to_json((call,))[0]
        grouped.setdefault((partition_of(key), replayed), []).append([key, row])
    for (partition, replayed), entries in grouped.items():
        for start in range(0, len(entries), MAX_CALLEES_PER_MESSAGE):
            chunk = entries[start : start + MAX_CALLEES_PER_MESSAGE]
            body = {"v": CALLEE_BATCH_VERSION, "calls": chunk}
            yield partition, replayed, orjson.dumps(body)


def callee_entries(key: bytes | None, value: bytes | None) -> list[tuple[str, Any]]:
    """The (callee key, history row) pairs of one record: an envelope, or one row keyed by
    its callee (the earlier form). Rows are checked by the caller (`lockouts.from_json`),
    one at a time, so one bad row is one dead letter. ValueError names what is wrong with
    the record as a whole."""
    if value is None:
        raise ValueError("the record has no value")
    raw = orjson.loads(value)
    if isinstance(raw, list):  # the earlier form: one row, keyed by the callee
        if not key:
            raise ValueError("a single callee row needs the callee key as record key")
        return [(key.decode(), raw)]
    if not isinstance(raw, dict) or raw.get("v") != CALLEE_BATCH_VERSION:
        raise ValueError(f'expected {{"v": {CALLEE_BATCH_VERSION}, "calls": [...]}} or one row')
    calls = raw.get("calls")
    if not isinstance(calls, list):
        raise ValueError('"calls" must be a list of [callee key, row]')
    entries: list[tuple[str, Any]] = []
    for index, entry in enumerate(calls):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"calls[{index}]: expected [callee key, row], got {entry!r:.200}")
        entries.append((entry[0], entry[1]))
    return entries
