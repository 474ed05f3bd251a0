"""A record answered 202 and then refused by the detector (too late) reaches the sender:
ingest, the detector worker and the api's consumer on a real broker, the rejection read
back over HTTP from the campaign's rejections."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from services.common.settings import ApiSettings
from tests.helpers import wait_until_async
from tests.stack import ServiceProcess, service_env

pytestmark = pytest.mark.integration

KEY = "integration-rejections-pseudonym-key"


def cdr(call_id: str, campaign: str, originated: datetime) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "campaign_id": campaign,
        "callee_number": "+393471234567",
        "originated_at": originated.isoformat(),
        "ended_at": (originated + timedelta(seconds=60)).isoformat(),
    }


async def test_a_too_late_record_accepted_with_202_shows_in_the_campaigns_rejections(
    broker: str, tmp_path: Path
) -> None:
    detector = ServiceProcess(
        ["detector"], service_env(broker, tmp_path / "detector"), tmp_path / "detector.log"
    ).start()
    settings = ApiSettings(
        data_dir=tmp_path / "api",
        kafka_bootstrap=broker,
        kafka_idempotence=False,
        pseudonym_key=KEY,
        consume_raw=False,
        archive=False,
    )
    (tmp_path / "api").mkdir()
    app = create_app(settings)
    campaign = f"late-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        async with app.router.lifespan_context(app):
            tokens = app.state.tokens
            ingest = {"Authorization": f"Bearer {await tokens.create('ingest')}"}
            viewer = {"Authorization": f"Bearer {await tokens.create('viewer')}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                newest = await client.post(
                    "/v1/cdrs",
                    json=[cdr("new-1", campaign, now - timedelta(minutes=5))],
                    headers=ingest,
                )
                assert newest.status_code == 202, newest.text

                async def seen() -> bool:
                    found = await client.get(f"/v1/campaigns/{campaign}", headers=viewer)
                    return found.status_code == 200

                await wait_until_async(seen, timeout=90, interval=0.3, message="campaign seen")
                # More than the 7-day lateness limit before the campaign's newest call:
                # ingest cannot know that, answers 202, and the detector dead-letters it.
                late = await client.post(
                    "/v1/cdrs",
                    json=[cdr("old-1", campaign, now - timedelta(days=8))],
                    headers=ingest,
                )
                assert late.status_code == 202, late.text
                assert late.json()["accepted"] == 1

                async def rejected() -> dict[str, Any] | None:
                    response = await client.get(
                        f"/v1/campaigns/{campaign}/rejections", headers=viewer
                    )
                    body = response.json()
                    return body if body["items"] else None

                try:
                    body = await wait_until_async(rejected, timeout=90, interval=0.3)
                except Exception:
                    raise AssertionError(detector.log_tail()) from None
                [item] = body["items"]
                assert (item["stage"], item["reason"], item["count"]) == ("cdr", "too_late", 1)
                assert item["example_call_ids"] == ["old-1"]
                shown = await client.get(f"/v1/campaigns/{campaign}", headers=viewer)
                assert shown.json()["rejected_after_acceptance"] == {"too_late": 1}
    finally:
        detector.stop()
