"""`cdrwatch token create --name | list | revoke` through the real command, on a SQLite
data dir: a name travels with the token, the list never shows a secret, a revoked token
stops verifying."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from services.common.auth import TokenStore
from services.common.db import create_engine
from tests.stack import ROOT


def cdrwatch(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRWATCH_")}
    env.update(CDRWATCH_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    return subprocess.run(  # noqa: S603 - the project's own command
        [sys.executable, "-m", "services.cli", "token", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _verify(data_dir: Path, token: str) -> object:
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'cdrwatch.db'}")
    try:
        return await TokenStore(engine).verify(token)
    finally:
        await engine.dispose()


def test_token_create_list_and_revoke_by_prefix(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = cdrwatch(
        data_dir, "create", "--role", "compliance", "--tenant", "acme", "--name", "Giulia Rossi"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    viewer = cdrwatch(data_dir, "create", "--role", "viewer").stdout.strip()
    assert token.startswith("cdrw_") and viewer.startswith("cdrw_")

    listed = cdrwatch(data_dir, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["PREFIX", "NAME", "ROLE", "TENANT", "CREATED", "REVOKED"]
    assert lines[1].startswith(token[:12]) and "Giulia Rossi" in lines[1]
    assert lines[1].split()[3:5] == ["compliance", "acme"]
    assert lines[1].split()[-1] == "-"  # not revoked
    assert lines[2].split()[:4] == [viewer[:12], "-", "viewer", "-"]
    assert token not in listed.stdout and viewer not in listed.stdout

    principal = asyncio.run(_verify(data_dir, token))
    assert principal.name == "Giulia Rossi"  # type: ignore[attr-defined]

    revoked = cdrwatch(data_dir, "revoke", token[:12])
    assert revoked.returncode == 0, revoked.stderr
    assert asyncio.run(_verify(data_dir, token)) is None
    assert asyncio.run(_verify(data_dir, viewer)) is not None
    after = cdrwatch(data_dir, "list").stdout.splitlines()
    assert after[1].split()[-1].endswith("Z")  # the revocation time
    again = cdrwatch(data_dir, "revoke", token[:12])
    assert again.returncode == 1 and "no active token" in again.stderr


def test_a_blank_or_unprintable_name_is_refused(tmp_path: Path) -> None:
    for name in ("  ", "a\nb", "x" * 201):
        result = cdrwatch(tmp_path / "data", "create", "--role", "viewer", "--name", name)
        assert result.returncode == 2, result.stdout
        assert "token name" in result.stderr
        assert "Traceback" not in result.stderr
