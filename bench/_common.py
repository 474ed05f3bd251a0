"""Shared pieces of the benchmarks: the environment header, child processes that cannot
outlive the benchmark, the embedded broker, and realistic dialer traffic.

Not a benchmark itself: `make bench` runs only `bench/[!_]*.py`.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import importlib.metadata
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
ROME = ZoneInfo("Europe/Rome")

# Measure the checkout this file is in, also where .venv has another one installed
# editable (the services' processes, run with cwd=ROOT, already do).
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))


# -- environment --------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def tansu_version() -> str:
    from services.common.broker import BrokerError, resolve_broker_binary

    try:
        binary = resolve_broker_binary()
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (BrokerError, OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or "unknown"


def print_header(title: str, packages: tuple[str, ...], settings: dict[str, object]) -> None:
    """The machine and software a figure was measured on, then the run's settings."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0))
    print(f"{title}  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"  machine   {cores} cores ({usable} usable), {_cpu_model()}")
    print(f"  python    {platform.python_version()} ({sys.executable})")
    print("  packages  " + ", ".join(f"{p} {_version(p)}" for p in packages))
    print(f"  broker    embedded {tansu_version()} (memory storage, 127.0.0.1)")
    print(f"  commit    {_commit()}")
    load1, load5, _ = os.getloadavg()
    print(
        f"  load      {load1:.2f} (1 min), {load5:.2f} (5 min) before the run; anything else "
        "running competes for the same cores"
    )
    print("  settings  " + " ".join(f"{k}={v}" for k, v in settings.items()))
    sys.stdout.flush()


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: object) -> str:
    """Milliseconds for a table: `1,234 ms`; `n/a` when there is no figure, `timeout` for
    an infinite one (a wait that never ended)."""
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "timeout"
    return f"{value:,.0f} ms"


# -- running -------------------------------------------------------------------------------


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_benchmark(body: Callable[[], None]) -> int:
    """Run `body` with SIGTERM treated like Ctrl-C, so every `finally` stops what it
    started. 0 when it ran, 130 when interrupted, 1 when it could not run."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        body()
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 1
    return 0


def run_main(json_output: bool, body: Callable[[], None]) -> int:
    """`run_benchmark`, with the human-readable figures on stderr when `--json` asks for
    the JSON document alone on stdout."""
    if json_output:
        with contextlib.redirect_stdout(sys.stderr):
            return run_benchmark(body)
    return run_benchmark(body)


def emit_json(payload: dict[str, Any]) -> None:
    """The `--json` document: one line on the real stdout (`run_main` sends the table to
    stderr meanwhile)."""
    import orjson

    assert sys.__stdout__ is not None
    sys.__stdout__.write(orjson.dumps(payload).decode() + "\n")


class BenchError(RuntimeError):
    """Something the benchmark needs could not be started or did not answer."""


def _die_with_parent() -> None:
    """Runs in a child before exec: own session (a Ctrl-C at the terminal reaches the
    benchmark, which stops its children in order) and SIGTERM when the benchmark dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


class Child:
    """One child process with its output in a log file (or a pipe, to read a banner)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_dir: Path,
        *,
        pipe_stdout: bool = False,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.pipe_stdout = pipe_stdout
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Child:
        stdout: int | IO[Any]
        if self.pipe_stdout:
            stdout = subprocess.PIPE
            stderr: int | IO[Any] = self.log_path.open("a")
        else:
            stdout = self.log_path.open("a")
            stderr = subprocess.STDOUT
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                text=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            for handle in (stdout, stderr):
                if not isinstance(handle, int):
                    handle.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line (pipe_stdout only), None on timeout or exit."""
        assert self.proc is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                return line
            if self.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to its session, wait, then SIGKILL. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def finish(self, timeout: float = 20.0) -> str:
        """Stop it like `stop()` and return what it printed on stdout and nobody read."""
        proc = self.proc
        if proc is None or proc.stdout is None or proc.stdout.closed:
            self.stop(timeout)
            return ""
        stdout = proc.stdout
        proc.stdout = None  # keep stop() from closing it before it is read
        try:
            self.stop(timeout)
            os.set_blocking(stdout.fileno(), True)
            return stdout.read()
        finally:
            stdout.close()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return ""


def python_module(*args: str) -> list[str]:
    """argv for `python -m services.cli ARGS` with this interpreter."""
    return [sys.executable, "-m", "services.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CDRWATCH_* setting of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    """A temporary directory for data and logs, removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix="cdrwatch-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept data and logs in {path})")
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def embedded_broker(log_dir: Path, partitions: int) -> Iterator[tuple[str, int]]:
    """A fresh embedded Tansu broker on 127.0.0.1 with the cdrwatch topics: its bootstrap
    and its pid."""
    import asyncio

    from services.common.broker import BrokerError, EmbeddedBroker
    from services.common.kafka import ensure_topics

    broker = EmbeddedBroker(log_path=log_dir / "broker.log")
    try:
        bootstrap = broker.start()
    except BrokerError as exc:
        raise BenchError(f"embedded broker: {exc}") from exc
    try:
        asyncio.run(ensure_topics(bootstrap, partitions))
        assert broker.pid is not None
        yield bootstrap, broker.pid
    finally:
        broker.stop()


def wait_http_ok(url: str, child: Child, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited during start-up:\n{child.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{url} not ready after {timeout:.0f} s:\n{child.log_tail()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of process `pid` (this one by default) in MiB; nan once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- traffic -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """How a simulated campaign's calls turn out (shares as in services.simulate)."""

    campaign_id: str
    weight: float
    answer_rate: float
    machine_share: float
    silent_share: float
    late_connect_share: float
    dial_mode: str


def campaign_plans(count: int, rng: random.Random, prefix: str = "bench") -> list[CampaignPlan]:
    """`count` campaigns of varied size and quality: most compliant (silent 0.3-2.4 %),
    about one in eight over the Italian 3 % cap, a few preview/progressive ones."""
    sectors = ("energia", "telco", "insurance", "bank", "charity", "media", "travel", "retail")
    plans = []
    for i in range(count):
        breaching = i % 8 == 3
        mode = rng.choices(("predictive", "progressive", "preview"), (0.85, 0.1, 0.05))[0]
        plans.append(
            CampaignPlan(
                campaign_id=f"{prefix}-{sectors[i % len(sectors)]}-{i:03d}",
                weight=rng.uniform(0.3, 3.0),
                answer_rate=rng.uniform(0.35, 0.65),
                machine_share=rng.uniform(0.05, 0.25),
                silent_share=0.0
                if mode != "predictive"
                else (rng.uniform(0.035, 0.08) if breaching else rng.uniform(0.003, 0.024)),
                late_connect_share=rng.uniform(0.0, 0.02),
                dial_mode=mode,
            )
        )
    return plans


_US_AREA_CODES = (212, 646, 718, 917, 617, 305, 404, 312, 202, 215, 713, 214, 313, 704, 412)


def callee_numbers(count: int, rng: random.Random) -> list[tuple[str, str | None]]:
    """`count` distinct callee numbers (number as the dialer sends it, callee_country or
    None): 55 % Italian (mobiles and Milan/Rome lines, one in ten in national form with
    callee_country IT), 25 % UK mobiles, 20 % US numbers of eastern area codes. All are
    valid for `phonenumbers`."""
    seen: set[str] = set()
    out: list[tuple[str, str | None]] = []
    while len(out) < count:
        roll = rng.random()
        country: str | None = None
        if roll < 0.45:
            number = f"+393{rng.randint(20, 49)}{rng.randint(0, 9_999_999):07d}"
        elif roll < 0.55:
            number = f"+39{rng.choice(('02', '06'))}{rng.randint(10_000_000, 99_999_999)}"
        elif roll < 0.80:
            number = f"+447{rng.choice('58')}{rng.randint(0, 99):02d}{rng.randint(0, 999_999):06d}"
        else:
            npa = rng.choice(_US_AREA_CODES)
            number = f"+1{npa}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        if number in seen:
            continue
        seen.add(number)
        if number.startswith("+39") and rng.random() < 0.1:
            number, country = number[3:], "IT"
        out.append((number, country))
    return out


def _stamp(instant: datetime) -> str:
    """RFC 3339 with the dialer's local offset, milliseconds, as dialers commonly send."""
    return instant.astimezone(ROME).isoformat(timespec="milliseconds")


def dialer_cdr(
    plan: CampaignPlan,
    call_id: str,
    number: tuple[str, str | None],
    originated: datetime,
    rng: random.Random,
) -> dict[str, Any]:
    """One finished call as a dialer posts it (the shape of services.simulate.make_cdr)."""
    ringing = originated + timedelta(seconds=rng.uniform(0.5, 2.5))
    cdr: dict[str, Any] = {
        "call_id": call_id,
        "campaign_id": plan.campaign_id,
        "dialer_id": f"dialer-{sum(map(ord, plan.campaign_id)) % 4}",
        "dial_mode": plan.dial_mode,
        "callee_number": number[0],
        "cli_number": "+390612345678",
        "originated_at": _stamp(originated),
        "ringing_at": _stamp(ringing),
    }
    if number[1] is not None:
        cdr["callee_country"] = number[1]
    if rng.random() >= plan.answer_rate:
        released_early = rng.random() < 0.03
        ring_out = rng.uniform(5, 14) if released_early else rng.uniform(15, 30)
        cdr.update(
            ended_at=_stamp(ringing + timedelta(seconds=ring_out)),
            hangup_side="system",
            disposition="NA",
            sip_code=487,
        )
        return cdr
    answered = ringing + timedelta(seconds=rng.uniform(3, 25))
    cdr["answered_at"] = _stamp(answered)
    if rng.random() < plan.machine_share:
        cdr.update(
            amd_result="machine",
            ended_at=_stamp(answered + timedelta(seconds=rng.uniform(2, 5))),
            hangup_side="system",
            disposition="AA",
        )
        return cdr
    cdr["amd_result"] = "human"
    roll = rng.random()
    if roll < plan.silent_share:
        cdr.update(
            ended_at=_stamp(answered + timedelta(seconds=rng.uniform(1.0, 2.9))),
            hangup_side="system",
            message_type="comfort_noise",
            disposition="DROP",
        )
        return cdr
    late = roll < plan.silent_share + plan.late_connect_share
    agent = answered + timedelta(seconds=rng.uniform(2.3, 6) if late else rng.uniform(0.2, 1.8))
    cdr.update(
        agent_connected_at=_stamp(agent),
        agent_id=f"agent-{rng.randint(1, 120):03d}",
        ended_at=_stamp(agent + timedelta(seconds=rng.uniform(20, 400))),
        hangup_side=rng.choice(("callee", "agent")),
        disposition="SALE" if rng.random() < 0.1 else "NI",
    )
    return cdr


def dialer_traffic(
    count: int,
    *,
    seed: int,
    campaigns: int,
    numbers: int,
    start: datetime,
    span: timedelta,
    id_prefix: str,
    calling_hours: bool = False,
) -> list[dict[str, Any]]:
    """`count` dialer CDRs of `campaigns` campaigns, originated in order over `span`
    from `start` (a few seconds of jitter), callees drawn from `numbers` distinct
    numbers (so some are called more than once), call ids unique. `calling_hours`: only
    within `calling_windows` of the span (a well-run campaign's week), not round the
    clock."""
    rng = random.Random(seed)
    plans = campaign_plans(campaigns, rng)
    weights = [p.weight for p in plans]
    pool = callee_numbers(numbers, rng)
    chosen = rng.choices(plans, weights, k=count)
    at = _spread(count, calling_windows(start, span) if calling_hours else [(start, span)])
    return [
        dialer_cdr(
            plan,
            f"{id_prefix}-{i:09d}",
            pool[rng.randrange(len(pool))],
            at(i) - timedelta(seconds=rng.uniform(0, 30)),
            rng,
        )
        for i, plan in enumerate(chosen)
    ]


# Rome wall time in which the `it` profile's calling hours (Monday-Friday 09:00-20:00 in
# the callee's zone) hold for every callee `callee_numbers` draws: 16:00 in Rome is 15:00
# in London, 10:00 in New York and 09:00 in Chicago (the Central zone of area codes 312,
# 214 and 713; 10:00 in the weeks Europe and the US switch DST apart), 20:00 in Rome is
# 13:00 in Chicago. Five minutes are kept clear at each end for the jitter
# `dialer_traffic` subtracts (tests/unit/test_bench_traffic.py judges every call).
CALLING_FROM, CALLING_UNTIL = (16, 5), (19, 55)


def calling_windows(start: datetime, span: timedelta) -> list[tuple[datetime, timedelta]]:
    """The parts of [start, start + span) a campaign calling all three countries within
    the `it` profile's hours may call in: Monday to Friday, CALLING_FROM to CALLING_UNTIL in
    Rome, no Italian public holiday nor the day before one (shorter hours)."""
    import holidays

    end = start + span
    first = start.astimezone(ROME).date()
    years = range(first.year, end.astimezone(ROME).year + 2)
    it_holidays = holidays.country_holidays("IT", years=years)
    windows = []
    day = first
    while datetime(day.year, day.month, day.day, tzinfo=ROME) < end:
        if day.weekday() < 5 and day not in it_holidays and day + timedelta(1) not in it_holidays:
            opens = max(start, datetime(day.year, day.month, day.day, *CALLING_FROM, tzinfo=ROME))
            closes = min(end, datetime(day.year, day.month, day.day, *CALLING_UNTIL, tzinfo=ROME))
            if closes > opens:
                windows.append((opens, closes - opens))
        day += timedelta(days=1)
    if not windows:
        raise BenchError(f"no calling hours in the {span} from {start}")
    return windows


def _spread(count: int, windows: list[tuple[datetime, timedelta]]) -> Callable[[int], datetime]:
    """The i-th of `count` instants spread evenly over `windows` (in order), as if their
    lengths followed one another."""
    total = sum((length for _, length in windows), timedelta())
    step = total / max(count, 1)
    ends: list[timedelta] = []  # the running length at the end of each window
    for _, length in windows:
        ends.append((ends[-1] if ends else timedelta()) + length)

    def at(i: int) -> datetime:
        offset = step * i
        k = bisect.bisect_right(ends, offset)
        k = min(k, len(windows) - 1)
        opens, length = windows[k]
        return opens + offset - (ends[k] - length)

    return at


def recent_weekday(now: datetime, at_hour: int, at_minute: int = 0) -> datetime:
    """The most recent Tuesday-Thursday before today that is no Italian public holiday,
    at `at_hour`:`at_minute` in Rome: CDRs stamped then are within the `it` calling
    hours for Italian callees, old enough for ingest, and recent."""
    import holidays

    day: date = now.astimezone(ROME).date() - timedelta(days=1)
    it_holidays = holidays.country_holidays("IT", years=range(day.year - 1, day.year + 1))
    while day.weekday() not in (1, 2, 3) or day in it_holidays:
        day -= timedelta(days=1)
    return datetime(day.year, day.month, day.day, at_hour, at_minute, tzinfo=ROME)


def normalized_records(
    cdrs: list[dict[str, Any]], key: bytes, clock: Callable[[], datetime]
) -> list[tuple[bytes, bytes]]:
    """(Kafka key, value) of each CDR exactly as ingest publishes it on cdrwatch.cdrs.v1:
    the ingest service's own validation, normalisation and encoding."""
    from schemas.cdr_v1 import parse_cdr
    from services.ingest.normalize import Normalizer
    from services.ingest.service import encode_record

    normalizer = Normalizer(key, clock, timedelta(hours=1))
    out = []
    for raw in cdrs:
        cdr, errors = parse_cdr(raw)
        if cdr is None:
            raise BenchError(f"generated CDR invalid: {errors}")
        record, errors = normalizer.normalize(cdr)
        if record is None:
            raise BenchError(f"generated CDR not normalisable: {errors}")
        out.append(encode_record(record))
    return out


# -- profiling -----------------------------------------------------------------------------


class Profiler:
    """`py-spy record` attached to a running process (the `bench` extra installs py-spy),
    collapsed stacks into `out`; `stop()` ends it with SIGINT and returns a summary."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        exe = Path(sys.executable).with_name("py-spy")
        self.argv = [str(exe), "record", "-p", str(pid), "-r", str(rate), "--nonblocking"]
        self.argv += ["-f", "raw", "-o", str(out)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        if not Path(self.argv[0]).exists():
            raise BenchError("py-spy is not installed; `pip install -e '.[dev,bench]'`")
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py, package-relative)`."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if name else frame


def profile_summary(raw: Path, top: int = 15) -> list[str]:
    """The functions with the most samples, inclusive and self, from collapsed stacks."""
    from collections import Counter

    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = [_frame_name(f) for f in stack.split(";")]
            total += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
            own[frames[-1]] += int(count)
    if not total:
        return [f"no samples in {raw}"]
    generic = (
        *("asyncio/", "threading.py", "runpy", "<module>", "selectors.py", "socketserver.py"),
        *("mode/worker", "mode/threads", "mode/services", "uvicorn/", "starlette/"),
    )
    lines = [f"py-spy: {total} samples (all threads, idle waits included) in {raw}"]
    lines.append("  inclusive (frames of the event loop and threads left out):")
    shown = [
        (k, v)
        for k, v in inclusive.most_common()
        if not k.startswith("main (") and not any(g in k for g in generic)
    ]
    lines += [f"    {v / total:6.1%}  {k}" for k, v in shown[:top]]
    lines.append("  self:")
    lines += [f"    {v / total:6.1%}  {k}" for k, v in own.most_common(top)]
    return lines


def up_child(work: Path) -> Child:
    """`cdrwatch up` on free ports with its data under `work` (start it, then `start_stack`)."""
    from services.common.broker import free_port

    return Child(
        "up",
        python_module(
            "up",
            "--api-port",
            str(free_port()),
            "--ingest-port",
            str(free_port()),
            "--data-dir",
            str(work / "data"),
        ),
        clean_env(),
        work,
        pipe_stdout=True,
    )


@dataclass(frozen=True)
class Stack:
    api_url: str
    ingest_url: str
    metrics_url: str
    bootstrap: str
    tokens: dict[str, str]
    # Every detector process's metrics URL (the CDR stage's first, as `metrics_url`).
    detector_metrics: tuple[str, ...] = ()


def start_stack(up: Child, timeout: float = 120.0) -> Stack:
    """Wait for the banner of `cdrwatch up` and read its URLs and tokens."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = up.read_line(deadline - time.monotonic())
        if line is None:
            break
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            banner = "".join(lines)
            tokens = dict(
                re.findall(r"^\s{4}(admin|compliance|viewer|ingest)\s+(\S+)$", banner, re.M)
            )
            api = re.search(r"API and dashboard: (\S+)", banner)
            ingest = re.search(r"Ingest \(POST /v1/cdrs, also served by the API\): (\S+)", banner)
            metrics = re.search(r"Detector metrics: (\S+)", banner)
            kafka = re.search(r"Kafka bootstrap: (\S+)", banner)
            found = api and ingest and metrics and kafka
            if not (found and "ingest" in tokens and "viewer" in tokens):
                raise BenchError(f"unexpected banner of cdrwatch up:\n{banner}")
            line = next(x for x in banner.splitlines() if "Detector metrics:" in x)
            detectors = tuple(re.findall(r"(http://\S+/metrics)", line))
            return Stack(api[1], ingest[1], metrics[1], kafka[1], tokens, detectors)
    raise BenchError("cdrwatch up did not come up:\n" + "".join(lines) + up.log_tail())
