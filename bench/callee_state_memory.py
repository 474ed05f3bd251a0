"""Memory of the per-callee state at 10 million callees (issue 3, SPEC "Quality bars").

Writes N callee histories (the detector's JSON rows, one to three calls each) into one
RocksDB database opened with faust's RocksDB options as the detector's `callees` table sets
them (services.detector.app.callee_store_options; the table has one such database per
partition), then reads a sample back, and prints the process's resident memory along the
way and the size on disk. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

import orjson
from _common import rss_mib


def history(rng: random.Random, n: int) -> list[list[object]]:
    base = 1_772_440_000_000_000 + rng.randrange(10**12)
    return [
        [f"call-{n}-{i}", f"campaign-{rng.randrange(10_000)}", base + i * 3_600_000_000, 0, "s"]
        for i in range(rng.randint(1, 3))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callees", type=int, default=10_000_000, help="default 10,000,000")
    parser.add_argument("--batch", type=int, default=100_000, help="writes between reports")
    parser.add_argument("--dir", type=Path, default=None, help="database directory (temp)")
    args = parser.parse_args()

    from faust.stores.rocksdb import RocksDBOptions

    from services.common.settings import DetectorSettings
    from services.detector.app import callee_store_options

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="cdrwatch-callees-"))
    path = workdir / "callees-0.db"
    settings = DetectorSettings()
    table_options = callee_store_options(settings)
    table_options.pop("driver")
    options = RocksDBOptions(use_rocksdict=True, **table_options)
    print(f"callee_state_memory  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"  machine   {os.cpu_count()} cores; rocksdict, faust's RocksDBOptions as the detector")
    print(f"  options   {table_options}")
    print(f"  database  {path}")
    db = options.open(path)
    rng = random.Random(1)
    start = time.perf_counter()
    print(f"  rss before writing: {rss_mib():,.0f} MiB")
    written = 0
    try:
        while written < args.callees:
            for n in range(written, min(args.callees, written + args.batch)):
                # one put per key, as faust's store does for each table write
                db.put(orjson.dumps(f"tenant\x1f{n:032x}"), orjson.dumps(history(rng, n)))
            written = min(args.callees, written + args.batch)
            if written % 1_000_000 == 0 or written == args.callees:
                print(
                    f"  {written:>12,} callees  {time.perf_counter() - start:7.1f} s"
                    f"  rss {rss_mib():,.0f} MiB"
                )
        sample = rng.sample(range(args.callees), k=min(100_000, args.callees))
        read_start = time.perf_counter()
        found = sum(db.get(orjson.dumps(f"tenant\x1f{n:032x}")) is not None for n in sample)
        read_s = time.perf_counter() - read_start
        print(
            f"  read back {found:,}/{len(sample):,} random callees in {read_s:.1f} s"
            f" ({len(sample) / read_s:,.0f}/s); rss {rss_mib():,.0f} MiB"
        )
        db.close()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  on disk {size / 2**20:,.0f} MiB; peak rss {peak:,.0f} MiB")
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
