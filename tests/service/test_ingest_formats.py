"""FreeSWITCH posts (mod_json_cdr / mod_xml_cdr request shapes, Basic auth) and file-shaped
bodies (`POST /v1/cdrs/formats/{format}`) through the ingest app with a fake broker."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    from tests.service.conftest import IngestHarness

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cdr"
FS_JSON = (
    b'{"variables": {"uuid": "fs-1", "start_uepoch": "1772442000000000", '
    b'"answer_uepoch": "1772442005000000", "bridge_uepoch": "1772442006000000", '
    b'"end_uepoch": "1772442060000000", "cdrwatch_campaign": "spring", '
    b'"hangup_cause": "NORMAL_CLEARING"}, '
    b'"callflow": {"caller_profile": {"destination_number": "+393471234567"}, '
    b'"times": {"answered_time": "1772442005000000"}}, '
    b'"callflow": {"caller_profile": {"destination_number": "+393471234567"}, '
    b'"times": {"answered_time": "0"}}}'
)


@pytest.fixture
async def fs(
    ingest_harness: Callable[..., contextlib.AbstractAsyncContextManager[IngestHarness]],
    tmp_path: Path,
) -> AsyncIterator[IngestHarness]:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "freeswitch-xml.toml").write_text(
        'campaign_default = "xml-campaign"\ncountry = "US"\ncallee_strip_prefixes = ["9"]\n'
    )
    (mappings / "asterisk-cdr-csv.toml").write_text(
        'timezone = "Europe/Moscow"\ncountry = "RU"\ncallee = ["src"]\n'
        'campaign_default = "stadium"\n'
    )
    async with ingest_harness(format_mappings_dir=mappings) as harness:
        harness.clock.now = harness.clock.now.replace(year=2026, month=3, day=2)
        yield harness


async def basic(harness: IngestHarness, role: str = "ingest") -> dict[str, str]:
    token = await harness.tokens.create(role)  # type: ignore[arg-type]
    credentials = base64.b64encode(f"freeswitch:{token}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


async def test_mod_json_cdr_raw_post_with_basic_auth_keeps_the_answer(fs: IngestHarness) -> None:
    headers = {**await basic(fs), "Content-Type": "application/json"}
    response = await fs.client.post(
        "/v1/freeswitch/json_cdr?uuid=fs-1", content=FS_JSON, headers=headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    [record] = fs.publisher.records
    assert record.call_id == "fs-1"
    assert record.campaign_id == "spring"
    assert record.answered_at is not None  # the first of two "callflow" keys holds it
    assert record.agent_connected_at is not None


async def test_mod_json_cdr_form_post_url_encoded(fs: IngestHarness) -> None:
    headers = {**await basic(fs), "Content-Type": "application/x-www-form-urlencoded"}
    body = b"cdr=" + quote(FS_JSON.decode(), safe="").encode()

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert fs.publisher.records[0].callee_key


async def test_mod_json_cdr_form_post_base64(fs: IngestHarness) -> None:
    headers = {**await basic(fs), "Content-Type": "application/x-www-form-base64-encoded"}
    body = b"cdr=" + base64.b64encode(FS_JSON)

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert len(fs.publisher.records) == 1


async def test_mod_xml_cdr_form_post_of_the_2008_sample(fs: IngestHarness) -> None:
    xml = (FIXTURES / "freeswitch/fs_xml_cdr_2008_bridged_answered.xml").read_bytes()
    headers = {**await basic(fs), "Content-Type": "application/x-www-form-urlencoded"}
    body = b"cdr=" + quote(xml.decode(), safe="").encode()
    fs.clock.now = fs.clock.now.replace(year=2008, month=8, day=1)

    response = await fs.client.post("/v1/freeswitch/xml_cdr", content=body, headers=headers)

    assert response.status_code == 200, response.text
    [record] = fs.publisher.records
    assert record.campaign_id == "1160"  # accountcode
    assert record.answered_at is not None
    assert record.answered_at.isoformat() == "2008-07-31T18:35:41.528422+00:00"


async def test_mod_xml_cdr_text_xml_post(fs: IngestHarness) -> None:
    xml = (FIXTURES / "freeswitch/fs_xml_cdr_2008_bridged_answered.xml").read_bytes()
    fs.clock.now = fs.clock.now.replace(year=2008, month=8, day=1)
    headers = {**await fs.token(), "Content-Type": "text/xml"}  # Bearer works too

    response = await fs.client.post("/v1/freeswitch/xml_cdr", content=xml, headers=headers)

    assert response.status_code == 200, response.text


async def test_internal_extension_is_answered_2xx_and_counted(fs: IngestHarness) -> None:
    body = (FIXTURES / "freeswitch/fs_json_cdr_2018_callflow_array.json").read_bytes()
    headers = {**await basic(fs), "Content-Type": "application/json"}

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=body, headers=headers)

    assert response.status_code == 200  # not retried by mod_json_cdr
    assert response.json()["skipped"] == {"internal_extension": 1}
    assert fs.publisher.records == []
    assert fs.metric("cdrwatch_cdrs_skipped_total", reason="internal_extension") == 1


async def test_a_cdr_that_can_never_be_taken_is_a_4xx(fs: IngestHarness) -> None:
    headers = {**await basic(fs), "Content-Type": "application/json"}
    no_campaign = FS_JSON.replace(b'"cdrwatch_campaign": "spring", ', b"")

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=no_campaign, headers=headers)

    assert response.status_code == 422
    [rejected] = response.json()["rejected"]
    assert "no_campaign" in rejected["errors"][0]["message"]


async def test_broker_down_is_503_so_mod_json_cdr_retries(fs: IngestHarness) -> None:
    fs.publisher.fail = True
    headers = {**await basic(fs), "Content-Type": "application/json"}

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=FS_JSON, headers=headers)

    assert response.status_code == 503
    assert response.headers["Retry-After"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"freeswitch:wrong").decode(), "Basic !!!", "Digest x"],
    ids=["none", "wrong-password", "not-base64", "other-scheme"],
)
async def test_basic_auth_refusals_are_401(fs: IngestHarness, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=FS_JSON, headers=headers)

    assert response.status_code == 401
    assert "Basic" in response.headers["WWW-Authenticate"]
    assert fs.publisher.records == []


async def test_viewer_token_is_403(fs: IngestHarness) -> None:
    headers = {**await basic(fs, "viewer"), "Content-Type": "application/json"}

    response = await fs.client.post("/v1/freeswitch/json_cdr", content=FS_JSON, headers=headers)

    assert response.status_code == 403


async def test_asterisk_master_csv_body_names_rejections_by_line(fs: IngestHarness) -> None:
    body = (FIXTURES / "asterisk/ast_cdr_csv_master_newcdrcolumns_masked.csv").read_bytes()
    fs.clock.now = fs.clock.now.replace(year=2024, month=1, day=29)
    headers = {**await fs.token(), "Content-Type": "text/csv"}

    response = await fs.client.post(
        "/v1/cdrs/formats/asterisk-cdr-csv", content=body, headers=headers
    )

    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] + len(result["rejected"]) + sum(result["skipped"].values()) == 19
    assert result["accepted"] >= 15
    for rejected in result["rejected"]:
        assert rejected["line"] >= 1
    assert {r.campaign_id for r in fs.publisher.records} == {"stadium"}


async def test_unknown_format_is_404(fs: IngestHarness) -> None:
    response = await fs.client.post("/v1/cdrs/formats/nope", content=b"x", headers=await fs.token())
    assert response.status_code == 404


async def test_format_body_with_no_good_call_is_422(fs: IngestHarness) -> None:
    headers = await fs.token()
    response = await fs.client.post(
        "/v1/cdrs/formats/cdr-v1-ndjson", content=b"nope\n", headers=headers
    )
    assert response.status_code == 422
    assert response.json()["rejected"][0]["line"] == 1
