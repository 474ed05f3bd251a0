"""Garbage-collector settings for a process that turns many small objects over.

The ingest allocates some fifty objects a CDR (the parsed dict, its field values, instants,
encoded bytes) and keeps a callee cache of up to 100,000 entries. With CPython's default
thresholds (700, 10, 10) a young collection runs every few records and the records of a
1,000-CDR request, alive until the broker acknowledges them, are promoted and traversed
again by the older generations; the full collections then walk the cache and every module
object too. Measured with gc.callbacks on `bench/import_throughput.py --rows 200000`: the
collector took 18-19 % of the ingest's CPU (6.3-7.7 of 34-40 s); at `--rows 1000000` the
ingest needed 130.0 CPU-s without this and 87.8 with it (bench/README.md).

`tune_for_throughput` freezes what exists after start-up (modules, pydantic schemas,
phonenumbers metadata: never garbage, no longer scanned) and lets the young generation
grow to `young` objects, so most of a request's objects die before any collection sees
them. Cycles are still collected, later; memory grows by at most a request's garbage.

The detector uses the same settings: its state (dedup entries, minute buckets, campaign
records) lives in memory and the default full collections walk all of it again and again,
one cause of its slowing down as state grows. `bench/detector_throughput.py --records 50000
--no-quix`, two runs each way: 983 and 1,010 CDR/s without (first/last quarter 1,766/845
and 1,874/994), 1,113 and 1,165 CDR/s with (1,631/1,206 and 1,954/1,082).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_for_throughput(young: int = YOUNG_THRESHOLD) -> None:
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
