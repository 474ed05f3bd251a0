"""The OpenAPI both apps publish (issue 8 item 6): the CDR fields with types, units, rules
and examples; every error the guard or the route can answer; the auth scheme and each
operation's role, checked against the route table the guard enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.cdr_v1 import CdrV1
from schemas.cdr_v1_fields import CDR_FIELDS
from services.common.http_security import route_table
from tests.service.http_apps import build_api, build_ingest


@pytest.fixture(scope="module", params=["api", "ingest"])
def app(request, tmp_path_factory):
    directory: Path = tmp_path_factory.mktemp(f"openapi-{request.param}")
    return (build_api if request.param == "api" else build_ingest)(directory)


def _operations(spec):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_the_cdr_body_documents_every_field(app):
    spec = app.openapi()
    body = spec["paths"]["/v1/cdrs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["oneOf"][0] == {"$ref": "#/components/schemas/CdrV1"}
    cdr = spec["components"]["schemas"]["CdrV1"]
    assert cdr["type"] == "object"
    assert set(cdr["properties"]) == set(CdrV1.model_fields)
    for name, prop in cdr["properties"].items():
        doc = CDR_FIELDS[name]
        assert doc.kind in prop["description"], name
        assert doc.rules in prop["description"], name
        assert prop["examples"] == [doc.example], name
    assert "docs/cdr-v1.md" in cdr["description"]


def test_auth_is_a_documented_scheme_and_each_operation_names_its_role(app):
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert "cdrwatch token create" in schemes["HTTPBearer"]["description"]
    roles = {
        (entry.path, method.lower()): entry.role
        for entry in route_table(app.routes)
        for method in entry.methods or ()
    }
    for path, method, operation in _operations(spec):
        role = roles[(path, method)]
        if role is None:
            assert operation["security"] == [], (method, path)
            assert "401" not in operation["responses"], (method, path)
            continue
        assert operation["x-required-role"] == role, (method, path)
        assert {"HTTPBearer": []} in operation["security"], (method, path)
        assert f"Role: `{role}`" in operation["description"], (method, path)
        unauthorised = operation["responses"]["401"]
        assert "WWW-Authenticate" in unauthorised["headers"], (method, path)
        assert "403" in operation["responses"], (method, path)


def test_every_error_an_operation_can_answer_is_documented(app):
    spec = app.openapi()
    assert spec["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        assert "431" in responses, (method, path)
        if method in ("post", "put"):
            assert "413" in responses, (method, path)
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in responses, (method, path)
        if "{" in path:
            assert "404" in responses or "422" in responses, (method, path)
        for code, response in responses.items():
            assert response.get("description"), (method, path, code)
            if code.startswith("4") and code != "422":
                assert "application/json" in response["content"], (method, path, code)


def test_the_freeswitch_routes_document_basic_beside_bearer(tmp_path):
    spec = build_ingest(tmp_path).openapi()
    operation = spec["paths"]["/v1/freeswitch/json_cdr"]["post"]
    assert {"HTTPBasic": []} in operation["security"]
    assert "ingest token" in spec["components"]["securitySchemes"]["HTTPBasic"]["description"]
