"""Background dialer load for bench/alert_latency.py: posts realistic CDRs to an ingest
URL at a target rate, in one batch per tick, with a bounded number of requests in
flight (when the server falls behind, the achieved rate drops; it is reported).

Event time runs from `--event-start` at wall-clock speed, so the calling-hours rules see
the same hours whatever day the benchmark runs. Stops after `--seconds` or on SIGTERM /
SIGINT, then prints one JSON line: {"sent", "accepted", "seconds", "rate", "statuses"}.
Run by the benchmark, not by hand: `python bench/_load_generator.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from datetime import datetime, timedelta

import httpx
import orjson
from _common import callee_numbers, campaign_plans, dialer_cdr


async def generate(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, object]:
    rng = random.Random(args.seed)
    plans = campaign_plans(args.campaigns, rng, prefix=f"{args.prefix}-bg")
    weights = [p.weight for p in plans]
    pool = callee_numbers(args.numbers, rng)
    event_start = datetime.fromisoformat(args.event_start)
    per_tick = args.rate * args.tick
    statuses: Counter[str] = Counter()
    totals = {"sent": 0, "accepted": 0}
    inflight = asyncio.Semaphore(args.max_inflight)
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    started = loop.time()
    carry = 0.0
    seq = 0

    async def post(client: httpx.AsyncClient, body: bytes, count: int) -> None:
        try:
            response = await client.post("/v1/cdrs", content=body)
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
        else:
            statuses[str(response.status_code)] += 1
            if response.status_code in (202, 422):
                totals["accepted"] += orjson.loads(response.content)["accepted"]
        finally:
            inflight.release()
        totals["sent"] += count

    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=30.0) as client:
        tick = 0
        while not stop.is_set() and loop.time() - started < args.seconds:
            carry += per_tick
            count, carry = int(carry), carry - int(carry)
            now = event_start + timedelta(seconds=loop.time() - started)
            batch = []
            for plan in rng.choices(plans, weights, k=count):
                seq += 1
                originated = now - timedelta(seconds=rng.uniform(20, 90))
                number = pool[rng.randrange(len(pool))]
                batch.append(dialer_cdr(plan, f"{args.prefix}-{seq}", number, originated, rng))
            if batch:
                await inflight.acquire()
                task = asyncio.create_task(post(client, orjson.dumps(batch), len(batch)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            tick += 1
            delay = started + tick * args.tick - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    seconds = loop.time() - started
    return {
        **totals,
        "seconds": seconds,
        "rate": totals["accepted"] / seconds if seconds else 0.0,
        "statuses": dict(statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ingest base URL (loopback)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, default=2000.0, help="CDR/s")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this")
    parser.add_argument("--tick", type=float, default=0.1, help="seconds between batches")
    parser.add_argument("--max-inflight", type=int, default=4)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--event-start", required=True, help="RFC 3339 instant")
    parser.add_argument("--prefix", default=f"load-{int(time.time())}")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    async def run() -> dict[str, object]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await generate(args, stop)

    print(orjson.dumps(asyncio.run(run())).decode(), flush=True)


if __name__ == "__main__":
    main()
