"""The whole stack as `cdrwatch up` runs it, started once for the e2e lane."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.common.broker import free_port
from tests.stack import ROOT


@dataclass(frozen=True)
class Stack:
    api_url: str
    ingest_url: str
    metrics_url: str
    data_dir: Path
    tokens: dict[str, str]

    def client(self, role: str, base: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base or self.api_url,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=60,
        )

    def pid(self, service: str) -> int:
        return int((self.data_dir / "run" / f"{service}.pid").read_text())


def _read_banner(proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                return "".join(lines)
            continue
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("cdrwatch up did not come up:\n" + "".join(lines))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
    proc = subprocess.Popen(  # noqa: S603 - the project's own command
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--api-port",
            str(free_port()),
            "--ingest-port",
            str(free_port()),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = _read_banner(proc, timeout=120)
        tokens = dict(re.findall(r"^\s{4}(admin|compliance|viewer|ingest)\s+(\S+)$", banner, re.M))
        api = re.search(r"API and dashboard: (\S+)", banner)
        ingest = re.search(r"Ingest \(POST /v1/cdrs, also served by the API\): (\S+)", banner)
        metrics = re.search(r"Detector metrics: (\S+)", banner)
        assert api and ingest and metrics and len(tokens) == 4, banner
        yield Stack(api[1], ingest[1], metrics[1], data_dir, tokens)
    finally:
        children = _pids(data_dir / "run")
        proc.terminate()  # what Ctrl-C or a service manager does
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("cdrwatch up did not stop within 60 s of SIGTERM") from None
    assert proc.returncode == 0, f"cdrwatch up exited with {proc.returncode}"
    left = [pid for pid in children | _pids(data_dir / "run") if _alive(pid)]
    assert not left, f"cdrwatch up left processes behind: {left}"


def _pids(run_dir: Path) -> set[int]:
    return {int(p.read_text()) for p in run_dir.glob("*.pid")} if run_dir.exists() else set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its parent; only running ones count.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
