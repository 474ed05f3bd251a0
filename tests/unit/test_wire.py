"""The detector's internal wire: callee partitions as a keyed Kafka send picks them."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from services.detector.wire import CalleePartitions, murmur2


def test_murmur2_equals_the_kafka_clients_for_every_length_and_byte() -> None:
    # Every tail length (0-3 extra bytes), empty input, high bytes (sign bits in Java).
    rng = random.Random(7)
    samples = [b"", b"\x00", b"\xff" * 3, b"\x80" * 4, b"tenant-b/0123456789abcdef"]
    samples += [rng.randbytes(rng.randrange(0, 90)) for _ in range(5000)]
    for data in samples:
        assert murmur2(data) == aiokafka_murmur2(data), data


def test_callee_partitions_are_those_of_a_keyed_send() -> None:
    # The callee table is co-partitioned with the topic: a partition that moved would put
    # a callee's calls where its history is not.
    rng = random.Random(11)
    partitioner = DefaultPartitioner()
    for count in (1, 4, 7, 12):
        partitions = list(range(count))
        of = CalleePartitions(count)
        for _ in range(500):
            key = f"tenant-{rng.randrange(3)}/{rng.randbytes(16).hex()}"
            assert of(key) == partitioner(key.encode(), partitions, partitions)
