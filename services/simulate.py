"""A dialer simulator: realistic outbound traffic for several campaigns, sent to ingest.

Each campaign has an answer rate, an AMD machine share and an agent shortage that turns
answered calls into silent ones (nobody ever connected) or late connects (abandoned but
not silent). One campaign is tuned to breach the Italian 3 % silent-call cap within its
first minute; one runs close to the 80 % warning level; the others stay compliant.

CDRs are stamped with the wall clock (the calls "just ended"). Callee numbers are random
Italian mobile numbers; ingest pseudonymises them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

log = logging.getLogger("cdrwatch.simulate")


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    campaign_id: str
    calls_per_second: float
    answer_rate: float
    machine_share: float  # of answered calls, classed machine by AMD
    silent_share: float  # of calls answered by a person: no agent ever connected
    late_connect_share: float  # of calls answered by a person: agent after > 2 s
    dial_mode: str = "predictive"


DEFAULT_PLANS = (
    CampaignPlan("sim-energia-breach", 14.0, 0.6, 0.15, 0.07, 0.02),
    CampaignPlan("sim-telco-warning", 8.0, 0.55, 0.2, 0.026, 0.01),
    CampaignPlan("sim-insurance-ok", 6.0, 0.5, 0.1, 0.008, 0.01),
    CampaignPlan("sim-charity-preview", 2.0, 0.45, 0.05, 0.0, 0.0, dial_mode="preview"),
)


def make_cdr(plan: CampaignPlan, rng: random.Random, now: datetime) -> dict[str, Any]:
    """One finished call of `plan`, ending at about `now`."""
    ring = timedelta(seconds=rng.uniform(3, 25))  # until the callee answers
    originated = now - timedelta(seconds=rng.uniform(20, 90))
    ringing = originated + timedelta(seconds=rng.uniform(0.5, 2.5))
    cdr: dict[str, Any] = {
        "call_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "campaign_id": plan.campaign_id,
        "dialer_id": "simulator",
        "dial_mode": plan.dial_mode,
        "callee_number": f"+393{rng.randint(20, 49)}{rng.randint(0, 9_999_999):07d}",
        "originated_at": originated.isoformat(),
        "ringing_at": ringing.isoformat(),
    }
    if rng.random() >= plan.answer_rate:
        # Dialers let an unanswered call ring 15-30 s; a few are released too early.
        released_early = rng.random() < 0.03
        ring_out = rng.uniform(5, 14) if released_early else rng.uniform(15, 30)
        end = ringing + timedelta(seconds=ring_out)
        cdr.update(ended_at=end.isoformat(), hangup_side="system", disposition="NA")
        return cdr
    answered = ringing + ring
    cdr["answered_at"] = answered.isoformat()
    if rng.random() < plan.machine_share:
        cdr.update(
            amd_result="machine",
            ended_at=(answered + timedelta(seconds=rng.uniform(2, 5))).isoformat(),
            hangup_side="system",
            disposition="AA",
        )
        return cdr
    cdr["amd_result"] = "human"
    roll = rng.random()
    if roll < plan.silent_share:
        cdr.update(
            ended_at=(answered + timedelta(seconds=rng.uniform(1.0, 2.9))).isoformat(),
            hangup_side="system",
            message_type="comfort_noise",
            disposition="DROP",
        )
        return cdr
    wait = (
        rng.uniform(2.3, 6)
        if roll < plan.silent_share + plan.late_connect_share
        else rng.uniform(0.2, 1.8)
    )
    agent = answered + timedelta(seconds=wait)
    cdr.update(
        agent_connected_at=agent.isoformat(),
        agent_id=f"agent-{rng.randint(1, 40):03d}",
        ended_at=(agent + timedelta(seconds=rng.uniform(20, 400))).isoformat(),
        hangup_side=rng.choice(("callee", "agent")),
        disposition="SALE" if rng.random() < 0.1 else "NI",
    )
    return cdr


async def run_simulation(
    ingest_url: str,
    token: str,
    *,
    plans: tuple[CampaignPlan, ...] = DEFAULT_PLANS,
    seed: int | None = None,
    duration_seconds: float | None = None,
    tick_seconds: float = 1.0,
) -> int:
    """Post one batch per tick until cancelled (or `duration_seconds`); returns CDRs sent."""
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    sent = 0
    carry = dict.fromkeys((p.campaign_id for p in plans), 0.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=ingest_url, headers=headers, timeout=30) as client:
        while duration_seconds is None or loop.time() - started < duration_seconds:
            tick_started = loop.time()
            now = datetime.now(UTC)
            batch = []
            for plan in plans:
                carry[plan.campaign_id] += plan.calls_per_second * tick_seconds
                count = int(carry[plan.campaign_id])
                carry[plan.campaign_id] -= count
                batch.extend(make_cdr(plan, rng, now) for _ in range(count))
            if batch:
                try:
                    response = await client.post("/v1/cdrs", json=batch)
                except httpx.HTTPError as exc:
                    log.warning("simulate_post_failed error=%s", exc)
                else:
                    if response.status_code == 202:
                        sent += len(batch)
                    else:
                        log.warning(
                            "simulate_post_refused status=%s body=%s",
                            response.status_code,
                            response.text[:300],
                        )
            await asyncio.sleep(max(0.0, tick_seconds - (loop.time() - tick_started)))
    return sent
