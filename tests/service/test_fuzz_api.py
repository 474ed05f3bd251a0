"""schemathesis against the OpenAPI schemas of the api and the ingest, in process (ASGI),
with valid tokens: no generated request may get a 5xx (issue 6, item 7), and every 2xx
must be consistent with what the service did:

- ingest `POST /v1/cdrs`: a 202's `accepted` equals the records the (fake) publisher was
  handed by that request, each rejected record names its index and fields; any other
  answer published nothing (a batch is all-or-nothing toward the broker);
- the same for batches of CDRs drawn from the hypothesis strategies of CDR v1
  (tests/cdr_strategies.py): good and hostile records mixed, as JSON or NDJSON; the records
  published are exactly the ones not named as rejected, each rejection names fields;
- api `PUT /v1/campaigns/{id}`: a 200 published exactly one campaign configuration, any
  other answer none; the detector is not running here, so stats are not checked.

`CDRWATCH_FUZZ_EXAMPLES` sets the examples per operation (default 30; 200 for a deep
run). The module prints the number of cases per app and status.
"""

from __future__ import annotations

import asyncio
import os
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

with warnings.catch_warnings():  # starlette prefers httpx2 for its test client; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from services.api.app import create_app as create_api_app
from services.api.models import CampaignConfig
from services.api.publisher import campaign_record
from services.common.auth import TokenStore
from services.common.db import create_engine, migrate
from services.common.settings import ApiSettings, IngestSettings
from services.ingest.app import create_app as create_ingest_app
from tests.cdr_strategies import answered_call, fuzzed_record
from tests.service.conftest import FakePublisher

EXAMPLES = int(os.environ.get("CDRWATCH_FUZZ_EXAMPLES", "30"))
CASES: Counter[str] = Counter()


class FakeCampaignPublisher:
    """PUT /v1/campaigns publishes here instead of Kafka."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def publish(self, config: CampaignConfig) -> None:
        self.records.append(campaign_record(config))


async def _tokens(database_url: str, roles: dict[str, tuple[str, str | None]]) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        store = TokenStore(engine)
        return {name: await store.create(role, tenant) for name, (role, tenant) in roles.items()}  # type: ignore[arg-type]
    finally:
        await engine.dispose()


class Service:
    def __init__(self, app: Any, tokens: dict[str, str], publisher: Any) -> None:
        self.app = app
        self.tokens = tokens
        self.publisher = publisher


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def ingest_service(fuzz_dir: Path) -> Service:
    data = fuzz_dir / "ingest"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'tokens.db'}"
    tokens = asyncio.run(_tokens(url, {"ingest": ("ingest", None), "acme": ("ingest", "acme")}))
    publisher = FakePublisher()
    settings_ = IngestSettings(
        data_dir=data,
        database_url=url,
        pseudonym_key="fuzz-pseudonym-key-0123456789",
        consume_raw=False,
    )
    return Service(create_ingest_app(settings_, publisher), tokens, publisher)


@pytest.fixture(scope="module")
def api_service(fuzz_dir: Path) -> Service:
    data = fuzz_dir / "api"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'api.db'}"
    tokens = asyncio.run(_tokens(url, {"admin": ("admin", None), "acme": ("admin", "acme")}))
    publisher = FakeCampaignPublisher()
    # webhooks_enabled=False: the fuzzed webhooks' URLs (any host) are never called
    settings_ = ApiSettings(
        data_dir=data, database_url=url, serve_ingest=False, webhooks_enabled=False
    )
    app = create_api_app(settings_, consumer_enabled=False, campaign_publisher=publisher)
    return Service(app, tokens, publisher)


@pytest.fixture(scope="module")
def ingest_schema(ingest_service: Service) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", ingest_service.app)


@pytest.fixture(scope="module")
def api_schema(api_service: Service) -> Any:
    # The alert stream never ends by itself (the client hangs up), so a fuzz case would
    # wait forever; tests/service/test_api_stream.py and the auth matrix cover it.
    return schemathesis.openapi.from_asgi("/openapi.json", api_service.app).exclude(
        path="/v1/alerts/stream"
    )


@pytest.fixture(scope="module", autouse=True)
def _report_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    total = sum(CASES.values())
    line = f"schemathesis (tests/service/test_fuzz_api.py): {total} cases — " + ", ".join(
        f"{key} {count}" for key, count in sorted(CASES.items())
    )
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy schemas read `node._nodeid`, which pytest 9 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

ingest_lazy = schemathesis.pytest.from_fixture("ingest_schema")
api_lazy = schemathesis.pytest.from_fixture("api_schema")


def _token(case: Any, tokens: dict[str, str]) -> str:
    # A tenant-bound token for every other case: both kinds of principal get fuzzed.
    pick = zlib.crc32(f"{case.path}{case.query}{case.path_parameters}".encode()) % 2
    return tokens["acme"] if pick else next(iter(tokens.values()))


@ingest_lazy.parametrize()
@FUZZ
def test_ingest_never_answers_5xx_and_each_202_matches_what_was_published(
    case: Any, ingest_service: Service
) -> None:
    publisher: FakePublisher = ingest_service.publisher
    before = len(publisher.records)
    token = _token(case, ingest_service.tokens)
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    CASES[f"ingest {response.status_code}"] += 1
    case.validate_response(response, checks=[not_a_server_error])
    published = len(publisher.records) - before
    if case.method.upper() == "POST" and case.path == "/v1/cdrs" and response.status_code == 202:
        body = response.json()
        assert body["accepted"] == published, (body, published)
        for rejection in body["rejected"]:
            assert isinstance(rejection["index"], int)
            assert rejection["errors"], rejection
            assert all(e["field"] and e["message"] for e in rejection["errors"]), rejection
    else:
        assert published == 0, f"{response.status_code} yet {published} records were published"


@api_lazy.parametrize()
@FUZZ
def test_api_never_answers_5xx_and_each_put_200_published_one_configuration(
    case: Any, api_service: Service
) -> None:
    publisher: FakeCampaignPublisher = api_service.publisher
    before = len(publisher.records)
    token = _token(case, api_service.tokens)
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    CASES[f"api {response.status_code}"] += 1
    case.validate_response(response, checks=[not_a_server_error])
    published = len(publisher.records) - before
    if case.method.upper() == "PUT" and response.status_code == 200:
        assert published == 1, published
    else:
        assert published == 0, f"{case.method} {case.path} {response.status_code} published"


@pytest.fixture(scope="module")
def ingest_client(ingest_service: Service) -> Iterator[TestClient]:
    with TestClient(ingest_service.app) as client:
        yield client


def _encode(records: list[Any], ndjson: bool) -> tuple[bytes, str] | None:
    try:
        if ndjson:
            body = b"\n".join(orjson.dumps(r) for r in records)
            return body, "application/x-ndjson"
        return orjson.dumps(records), "application/json"
    except (TypeError, orjson.JSONEncodeError):
        return None  # not JSON at all (e.g. a lone surrogate): nothing a client can send


@FUZZ
@given(
    st.lists(st.one_of(answered_call(), fuzzed_record()), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_a_fuzzed_batch_publishes_exactly_the_records_not_rejected(
    ingest_service: Service,
    ingest_client: TestClient,
    records: list[dict[str, Any]],
    ndjson: bool,
    bound: bool,
) -> None:
    encoded = _encode(records, ndjson)
    if encoded is None:
        CASES["ingest batches: not encodable"] += 1
        return
    body, content_type = encoded
    publisher: FakePublisher = ingest_service.publisher
    before = len(publisher.records)
    token = ingest_service.tokens["acme" if bound else "ingest"]
    response = ingest_client.post(
        "/v1/cdrs",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    CASES[f"ingest batches {response.status_code}"] += 1
    assert response.status_code < 500, response.text[:500]
    published = publisher.records[before:]
    if response.status_code != 202:
        assert response.status_code in (400, 413, 422), response.text[:500]
        assert published == []
        return
    answer = response.json()
    rejected = {r["index"] for r in answer["rejected"]}
    for rejection in answer["rejected"]:
        assert rejection["errors"] and all(e["field"] for e in rejection["errors"]), rejection
    assert answer["accepted"] == len(published)
    kept = [r for i, r in enumerate(records) if i not in rejected]
    # Repeats of a call id inside the request are accepted once (`duplicates`).
    assert len(kept) == answer["accepted"] + answer["duplicates"]
    assert {p.call_id for p in published} == {str(r["call_id"]).strip() for r in kept}
    assert all(p.tenant_id == ("acme" if bound else "default") for p in published)
