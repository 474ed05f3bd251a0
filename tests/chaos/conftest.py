"""The chaos lane: the real embedded stack (`cdrwatch up` in a temporary data directory),
driven and wounded by the test.

Knobs (environment):
- CDRWATCH_CHAOS_SECONDS          seconds of load (default 60; `make chaos` 300)
- CDRWATCH_CHAOS_DETECTOR_EVERY   SIGKILL the detector every N seconds (default 20)
- CDRWATCH_CHAOS_FAULTS           comma list of detector, api, ingest, broker, restart
                                  (default all; "none" for a calm run)
- CDRWATCH_CHAOS_RATE             CDRs per second offered, all posters together (default 400)
- CDRWATCH_CHAOS_SETTLE_SECONDS   longest wait for the figures to settle (default 180)
- CDRWATCH_CHAOS_KEEP_LOGS        1: keep the data directory and logs, and print where
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.broker import free_port
from tests.stack import ROOT

FAULTS = ("detector", "api", "ingest", "broker", "restart")
ROLES = ("admin", "compliance", "viewer", "ingest")


@dataclass(frozen=True)
class ChaosSettings:
    seconds: float
    detector_every: float
    faults: frozenset[str]
    rate: float
    settle_seconds: float
    keep_logs: bool

    @classmethod
    def from_env(cls) -> ChaosSettings:
        env = os.environ
        raw = env.get("CDRWATCH_CHAOS_FAULTS", ",".join(FAULTS)).strip().lower()
        faults = frozenset() if raw in ("", "none") else frozenset(raw.replace(" ", "").split(","))
        unknown = faults - set(FAULTS)
        if unknown:
            raise pytest.UsageError(
                f"CDRWATCH_CHAOS_FAULTS: unknown {sorted(unknown)}; choose from {FAULTS}"
            )
        return cls(
            seconds=float(env.get("CDRWATCH_CHAOS_SECONDS", "60")),
            detector_every=float(env.get("CDRWATCH_CHAOS_DETECTOR_EVERY", "20")),
            faults=faults,
            rate=float(env.get("CDRWATCH_CHAOS_RATE", "400")),
            settle_seconds=float(env.get("CDRWATCH_CHAOS_SETTLE_SECONDS", "180")),
            keep_logs=env.get("CDRWATCH_CHAOS_KEEP_LOGS", "") not in ("", "0", "false", "no"),
        )


@dataclass
class ChaosStack:
    """`cdrwatch up` in `data_dir`, restartable with the same data directory and ports."""

    data_dir: Path
    api_port: int = field(default_factory=free_port)
    ingest_port: int = field(default_factory=free_port)
    api_url: str = ""
    ingest_url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    events: list[str] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)

    @property
    def out_path(self) -> Path:
        return self.data_dir.parent / f"up-{self.starts}.out"

    def note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self._t0:6.1f}s {text}")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env["CDRWATCH_DATA_DIR"] = str(self.data_dir)
        return env

    def start(self, timeout: float = 120.0) -> None:
        self.starts += 1
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - the project's own command
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "up",
                    "--api-port",
                    str(self.api_port),
                    "--ingest-port",
                    str(self.ingest_port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        banner = self._read_banner(timeout)
        api = re.search(r"API and dashboard: (\S+)", banner)
        ingest = re.search(r"Ingest \(POST /v1/cdrs[^)]*\): (\S+)", banner)
        assert api and ingest, banner
        self.api_url, self.ingest_url = api[1], ingest[1]
        printed = dict(re.findall(r"^\s{4}(admin|compliance|viewer|ingest)\s+(\S+)$", banner, re.M))
        self.tokens.update(printed)
        missing = [role for role in ROLES if role not in self.tokens]
        for role in missing:  # a stack that keeps its tokens may not print them again
            self.tokens[role] = self.create_token(role)
        self.note(f"stack up (start {self.starts})")

    def _read_banner(self, timeout: float) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            if "Press Ctrl-C to stop." in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"cdrwatch up did not come up (start {self.starts}):\n{text}")

    def create_token(self, role: str, tenant: str | None = None) -> str:
        args = [sys.executable, "-m", "services.cli", "token", "create", "--role", role]
        if tenant:
            args += ["--tenant", tenant]
        result = subprocess.run(  # noqa: S603 - the project's own command
            args, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def pid(self, service: str) -> int | None:
        path = self.data_dir / "run" / f"{service}.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text().strip())
        return None

    def kill(self, service: str) -> bool:
        """SIGKILL one service of the stack (by its pid file); False when not running."""
        pid = self.pid(service)
        if pid is None:
            self.note(f"kill -9 {service}: no pid file")
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            self.note(f"kill -9 {service}: pid {pid} not running")
            return False
        self.note(f"kill -9 {service} (pid {pid})")
        return True

    def stop(self, timeout: float = 60.0) -> int | None:
        """Ctrl-C (SIGINT) and wait; the exit code, None if it had to be killed."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self.note("cdrwatch up ignored SIGINT for 60 s: killed")
            return None
        self.note(f"cdrwatch up stopped with {code}")
        return code

    def restart(self) -> None:
        self.note("restart: SIGINT")
        self.stop()
        self.start()

    def alive_children(self) -> list[int]:
        run = self.data_dir / "run"
        pids = []
        for path in run.glob("*.pid") if run.exists() else ():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                pid = int(path.read_text().strip())
                os.kill(pid, 0)
                stat = Path(f"/proc/{pid}/stat")
                if stat.exists() and stat.read_text().split()[2] != "Z":
                    pids.append(pid)
        return pids

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def chaos_settings() -> ChaosSettings:
    return ChaosSettings.from_env()


@pytest.fixture
def chaos_stack(
    chaos_settings: ChaosSettings, request: pytest.FixtureRequest
) -> Iterator[ChaosStack]:
    root = Path(tempfile.mkdtemp(prefix="cdrwatch-chaos-"))
    stack = ChaosStack(root / "data")
    ok = False
    try:
        stack.start()
        yield stack
        ok = not request.node.stash.get(FAILED, True)
    finally:
        stack.stop()
        for pid in stack.alive_children():  # never leave a process behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if chaos_settings.keep_logs or not ok:
            sys.stderr.write(f"\nchaos: data directory and logs kept in {root}\n")
        else:
            shutil.rmtree(root, ignore_errors=True)
