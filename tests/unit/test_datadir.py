"""The data directory is private: dirs 0700, files 0600 (CONTRACT decision 8)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from services.common.datadir import PRIVATE_UMASK, ensure_private_dir, secure_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_is_0700(tmp_path: Path) -> None:
    path = ensure_private_dir(tmp_path / "a" / "b")
    assert mode(path) == 0o700


def test_an_existing_open_data_dir_is_closed_and_what_an_older_run_left_too(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "cdrwatch.db").write_text("x")
    (data / "logs" / "api.log").write_text("x")
    (data / "pseudonym.key").write_text("x")
    os.chmod(data, 0o755)
    os.chmod(data / "logs", 0o755)
    for name in ("cdrwatch.db", "logs/api.log"):
        os.chmod(data / name, 0o644)
    os.chmod(data / "pseudonym.key", 0o600)
    secure_data_dir(data)
    assert (mode(data), mode(data / "logs")) == (0o700, 0o700)
    assert mode(data / "cdrwatch.db") == 0o600
    assert mode(data / "logs" / "api.log") == 0o600
    assert mode(data / "pseudonym.key") == 0o600


def test_cdrwatch_creates_owner_only_files(tmp_path: Path) -> None:
    """`cdrwatch token create` (umask 077 set in main) on a fresh data dir."""
    data = tmp_path / "data"
    env = {**os.environ, "CDRWATCH_DATA_DIR": str(data), "CDRWATCH_LOG_JSON": "true"}
    env.pop("CDRWATCH_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "token", "create", "--role", "viewer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "cdrwatch.db" for p in files)
    for path in files:
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
    assert PRIVATE_UMASK == 0o077
