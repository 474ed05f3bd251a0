"""Test helpers: bounded polls instead of bare sleeps (STYLE habit 7).

from tests.helpers import wait_until, wait_until_async

wait_until(lambda: store.count() == 3, timeout=10, message="three alerts stored")
alert = await wait_until_async(fetch_alert, timeout=20, ignore=(httpx.HTTPError,))
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

__all__ = ["WaitTimeout", "wait_until", "wait_until_async"]


class WaitTimeout(AssertionError):
    """The condition did not become true within the timeout."""


def _failure(
    predicate: object,
    timeout: float,
    attempts: int,
    last_value: object,
    last_error: BaseException | None,
    message: str | None,
) -> WaitTimeout:
    what = message or getattr(predicate, "__name__", repr(predicate))
    detail = f"last value {last_value!r}"
    if last_error is not None:
        detail = f"last error {type(last_error).__name__}: {last_error}"
    return WaitTimeout(
        f"timed out after {timeout:g} s ({attempts} tries) waiting for {what}; {detail}"
    )


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    message: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    Polls every `interval` seconds for at most `timeout` seconds, then raises WaitTimeout
    with the last value (or the last ignored exception). Exceptions of the `ignore` types
    count as "not yet"; any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        attempts += 1
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value, last_error = value, None
        if time.monotonic() >= deadline:
            raise _failure(predicate, timeout, attempts, last_value, last_error, message)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    message: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`wait_until` for the event loop: `predicate` may be a plain or a coroutine function.

    Each call of a coroutine predicate is itself bounded by the remaining time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempts = 0
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        attempts += 1
        try:
            outcome = predicate()
            if inspect.isawaitable(outcome):
                remaining = max(deadline - loop.time(), interval)
                value = await asyncio.wait_for(outcome, remaining)
            else:
                value = outcome
        except ignore as exc:
            last_error = exc
        except TimeoutError as exc:
            last_error = exc
        else:
            if value:
                return value  # type: ignore[return-value]
            last_value, last_error = value, None
        if loop.time() >= deadline:
            raise _failure(predicate, timeout, attempts, last_value, last_error, message)
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


def cdrs_of(value: bytes) -> list[Any]:
    """The CDRs (decoded JSON) of one message of `cdrwatch.cdrs.v1`: a `CdrBatchV1`
    envelope's records, or the single record of a message without one."""
    body = orjson.loads(value)
    return list(body["cdrs"]) if isinstance(body, dict) and "cdrs" in body else [body]


class LoopTurns:
    """How often the event loop ran another task while the code under test awaited: code
    that returns to the loop between chunks of work lets `count` grow, code that holds it
    leaves it at 0. Started with `start()` (which lets the counter settle), reset by
    setting `count = 0`, ended with `stop()`."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> LoopTurns:
        async def turn() -> None:
            while True:
                self.count += 1
                await asyncio.sleep(0)

        self._task = asyncio.create_task(turn())
        await asyncio.sleep(0)
        self.count = 0
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def bench_module(name: str) -> Any:
    """A script module of bench/ (`_summary`, `_common`), loaded from its file: bench/ is
    not a package, its scripts import each other as top-level modules."""
    import importlib.util
    import sys

    from tests.stack import ROOT

    spec = importlib.util.spec_from_file_location(f"bench{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench{name}"] = module
    spec.loader.exec_module(module)
    return module
