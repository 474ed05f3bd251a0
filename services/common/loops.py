"""Running a coroutine to completion on an event loop of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on a new event loop, never the current one (faust's worker makes
    and uses that one later), and close the loop after it.

    aiokafka's `stop` leaves tasks of a consumer's client and fetcher to finish their
    cancellation: they are run out here, or closing the loop logs "Task was destroyed but
    it is pending!"."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
