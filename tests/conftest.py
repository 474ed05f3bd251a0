"""Fixtures shared by every lane.

- `kafka_broker`: one embedded Tansu broker for the whole session; its bootstrap string.
- `postgres_url`: a fresh database on the local PostgreSQL for the session; its URL.
- `unique_name`: a factory of random names for topics, groups and campaigns.

Helpers (bounded polls) live in tests/helpers.py. This module imports nothing from the
services under test at import time, so a broken service cannot break every lane's
collection.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

# `from tests.helpers import ...` works with `pytest` as well as `python -m pytest`.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

T = TypeVar("T")

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in another thread.

    Session fixtures are synchronous and may be set up while pytest-asyncio owns the
    current thread's loop; a thread of their own keeps the two apart.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="fixture-loop", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap string ("127.0.0.1:PORT") of an embedded Tansu broker for the session.

    Memory storage, loopback only, no idempotent producer (set kafka_idempotence=False).
    Tests share it: use `unique_name` for topics and groups. Its log is kept under the
    session's temporary directory.
    """
    from services.common.broker import EmbeddedBroker

    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    broker = EmbeddedBroker(log_path=log_path)
    try:
        bootstrap = broker.start()
    except Exception as exc:
        pytest.fail(f"the embedded Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.stop()


async def _postgres_execute(database: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        database=database,
        timeout=5,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+asyncpg://postgres@127.0.0.1:5432/<fresh db>``, dropped at the end.

    Fails (never skips) when PostgreSQL is not reachable, naming the command to start it.
    """
    name = f"cdrwatch_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _run_coroutine(lambda: _postgres_execute("postgres", f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # refused, timed out, starting up, ...: never a skip
        pytest.fail(
            f"cannot create a test database on PostgreSQL {POSTGRES_HOST}:{POSTGRES_PORT} "
            f"as {POSTGRES_USER} ({type(exc).__name__}: {exc}). If it is not running, "
            f"start it with:\n  {POSTGRES_START}",
            pytrace=False,
        )
    try:
        yield f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        _run_coroutine(
            lambda: _postgres_execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("campaign")`` -> ``"campaign-3f9a1c2e"``: a fresh name per call.

    Safe as a Kafka topic or group name (letters, digits, '.', '_', '-').
    """

    def make(prefix: str = "test") -> str:
        return f"{prefix}-{secrets.token_hex(4)}"

    return make
