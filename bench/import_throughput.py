"""Rows/s of `cdrwatch import` over a generated Asterisk Master.csv (issue 9: 1,000,000 rows
in under 2 minutes on this machine).

Generates N cdr_csv rows (21 columns, newcdrcolumns on, local time, one in ten calls with a
second unanswered Dial leg joined by linkedid, all-new callee numbers), then times, as
subprocesses of `python -m services.cli import`:
1. `--dry-run`: read, map, join and validate with the ingest's own code, nothing sent;
2. via ingest: one fresh embedded broker, ONE `cdrwatch ingest` process, an ingest token;
   the importer posts NDJSON batches of 1,000 calls (202 only after the broker acked).
The importer, the ingest and the broker share the machine's cores. Prints figures; never
asserts. `--profile` attaches py-spy to the importer (and its validation workers) during the
dry run and to the ingest process during the import through it, and prints the top
functions of each.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from _common import (
    ROOT,
    BenchError,
    Child,
    Profiler,
    clean_env,
    cpu_seconds,
    embedded_broker,
    emit_json,
    fmt_int,
    print_header,
    profile_summary,
    python_module,
    run_main,
    wait_http_ok,
    work_dir,
)

from services.common.broker import free_port

PSEUDONYM_KEY = "bench-pseudonym-key-0123456789abcdef"
MAPPING = """\
timezone = "Europe/Rome"
campaign = ["accountcode"]
callee = ["dst"]
group_window_rows = 50
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-ingest", action="store_true", help="only the dry run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="also print figures as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the importer (dry run, workers included) and the ingest (via ingest)",
    )
    return parser.parse_args(argv)


def generate(path: Path, rows: int) -> int:
    """Write `rows` rows; return the number of calls."""
    start = (datetime.now(UTC) - timedelta(days=1)).replace(hour=8, minute=0, second=0)
    written = calls = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < rows:
            n = calls
            calls += 1
            at = start + timedelta(seconds=n % 36_000)
            t0 = at.strftime("%Y-%m-%d %H:%M:%S")
            t1 = (at + timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S")
            t2 = (at + timedelta(seconds=65)).strftime("%Y-%m-%d %H:%M:%S")
            uid = f"1772445600.{n}"
            number = f"+39347{n % 10_000_000:07d}"
            campaign = f"bench-{n % 50}"
            common = f'"{campaign}","0612345678","{number}","outbound","""bench"" <0612345678>"'
            if n % 10 == 0 and written + 1 < rows:
                handle.write(
                    f'{common},"SIP/trunk-{n:08x}","SIP/agent2-{n:08x}","Dial","SIP/agent2",'
                    f'"{t0}",,"{t1}",5,0,"NO ANSWER","DOCUMENTATION","{uid}","","",'
                    f'"{uid}",{2 * n}\n'
                )
                written += 1
            handle.write(
                f'{common},"SIP/trunk-{n:08x}","SIP/agent-{n:08x}","Dial","SIP/agent",'
                f'"{t0}","{t1}","{t2}",65,60,"ANSWERED","DOCUMENTATION","{uid}","","",'
                f'"{uid}",{2 * n + 1}\n'
            )
            written += 1
    return calls


def run_import(
    work: Path, csv: Path, env: dict[str, str], extra: list[str], profile: Path | None = None
) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds of the importer (its worker processes included), summary.
    With `profile`, py-spy samples the importer and its worker processes into that file."""
    argv = python_module(
        "import",
        str(csv),
        "--format",
        "asterisk-cdr-csv",
        "--mapping",
        str(work / "mapping.toml"),
        "--json",
        "--quiet",
        "--no-checkpoint",
        *extra,
    )
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    profiler = None
    if profile is not None:
        profiler = Profiler(proc.pid, profile)
        profiler.argv.append("--subprocesses")
        profiler.start()
    try:
        stdout, stderr = proc.communicate(timeout=1800)
        # before py-spy is reaped, so that its own CPU is not counted as the importer's
        seconds = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if profiler is not None:
            profiler.stop()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    if proc.returncode not in (0, 3):
        raise BenchError(f"import failed ({proc.returncode}): {stderr[-2000:]}")
    return seconds, cpu, orjson.loads(stdout)


def body(args: argparse.Namespace) -> None:
    print_header(
        "import_throughput",
        ("fastapi", "uvicorn", "aiokafka", "pydantic", "phonenumbers", "httpx"),
        {"rows": args.rows},
    )
    results: dict[str, object] = {"rows": args.rows}
    with work_dir(args.keep) as work:
        csv = work / "Master.csv"
        (work / "mapping.toml").write_text(MAPPING)
        began = time.perf_counter()
        calls = generate(csv, args.rows)
        print(
            f"generated {fmt_int(args.rows)} rows ({fmt_int(calls)} calls, "
            f"{csv.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - began:.1f} s",
            flush=True,
        )
        env = clean_env(CDRWATCH_LOG_JSON="true")
        dry_profile = work / "import-dry-run.pyspy.txt" if args.profile else None
        seconds, cpu, summary = run_import(work, csv, env, ["--dry-run"], dry_profile)
        print(
            f"dry run    {seconds:6.1f} s  {fmt_int(args.rows / seconds)} rows/s  "
            f"(importer CPU {cpu:.1f} s: {fmt_int(args.rows / cpu)} rows per CPU-s)  "
            f"valid {fmt_int(summary['imported'])}, rejected {summary['rejected']}",
            flush=True,
        )
        if dry_profile is not None:
            print("\n".join(profile_summary(dry_profile, top=20)), flush=True)
        results.update(
            rows=args.rows,
            dry_run_seconds=seconds,
            dry_run_rows_per_s=args.rows / seconds,
            dry_run_cpu=cpu,
            dry_run_valid=summary["imported"],
            dry_run_rejected=summary["rejected"],
        )
        if not args.skip_ingest:
            with embedded_broker(work, 4) as (bootstrap, _pid):
                env = clean_env(
                    CDRWATCH_KAFKA_BOOTSTRAP=bootstrap,
                    CDRWATCH_KAFKA_IDEMPOTENCE="false",
                    CDRWATCH_DATA_DIR=str(work / "data"),
                    CDRWATCH_PSEUDONYM_KEY=PSEUDONYM_KEY,
                    CDRWATCH_LOG_JSON="true",
                    CDRWATCH_CONSUME_RAW="false",
                )
                token = subprocess.run(  # noqa: S603
                    python_module("token", "create", "--role", "ingest"),
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                ).stdout.split()[-1]
                port = free_port()
                ingest = Child("ingest", python_module("ingest", "--port", str(port)), env, work)
                ingest_profiler: Profiler | None = None
                try:
                    ingest.start()
                    base = f"http://127.0.0.1:{port}"
                    wait_http_ok(f"{base}/readyz", ingest)
                    ingest_cpu0 = cpu_seconds(ingest.pid)
                    if args.profile:
                        ingest_profiler = Profiler(ingest.pid, work / "ingest.pyspy.txt").start()
                    seconds, cpu, summary = run_import(
                        work, csv, env, ["--ingest-url", base, "--token", token]
                    )
                    ingest_cpu = cpu_seconds(ingest.pid) - ingest_cpu0
                finally:
                    if ingest_profiler is not None:
                        ingest_profiler.stop()
                    ingest.stop()
            print(
                f"via ingest {seconds:6.1f} s  {fmt_int(args.rows / seconds)} rows/s  "
                f"(importer CPU {cpu:.1f} s, ingest CPU {ingest_cpu:.1f} s)  "
                f"imported {fmt_int(summary['imported'])}, rejected {summary['rejected']}",
                flush=True,
            )
            if ingest_profiler is not None:
                print("\n".join(profile_summary(ingest_profiler.out, top=20)), flush=True)
            results.update(
                ingest_seconds=seconds,
                ingest_rows_per_s=args.rows / seconds,
                ingest_importer_cpu=cpu,
                ingest_server_cpu=ingest_cpu,
                ingest_imported=summary["imported"],
                ingest_rejected=summary["rejected"],
            )
    print(f"  target        {fmt_int(args.rows)} rows in < 120 s (issue 9)")
    print(f"  cores         {len(os.sched_getaffinity(0))}, shared by importer, ingest, broker")
    if args.json:
        payload = {"benchmark": "import_throughput", **results}
        emit_json(payload)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args.json, lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
