"""The OpenAPI both apps publish, completed from what the HTTP guard enforces.

FastAPI documents what a route declares; the guard (services.common.http_security) adds
answers no route declares: 401 and 403 before the body on every route with a role, 413
above the body limit, 431 for oversized headers. `document_openapi` adds, from the same
route table the guard uses:

- the security schemes with what a token is (roles, tenants, `cdrwatch token create`),
  HTTP Basic beside Bearer on the routes that take it (FreeSWITCH's mod_json_cdr);
- per operation: its role (`x-required-role`, and a line in the description), the
  security requirement, 401 (with `WWW-Authenticate`) and 403 when it has a role, 413
  when it takes a body, 422 in the shape the apps answer with, 431 everywhere, each with
  the `Error` body `{"detail": ...}`;
- the `CdrV1` schema (with the field reference of schemas.cdr_v1_fields) that
  `POST /v1/cdrs` refers to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from schemas.cdr_v1_fields import documented_cdr_schema
from services.common.http_security import route_table

CDR_SCHEMA_REF = "#/components/schemas/CdrV1"
_ROLES_TEXT = (
    "A bearer token (`Authorization: Bearer cdrw_...`) made with `cdrwatch token create "
    "--role ROLE [--tenant T]` (printed once, stored hashed). Roles, each including the "
    "ones before it except ingest: `ingest` (write CDRs only), `viewer` (read), "
    "`compliance` (viewer plus ack and reports), `admin` (everything). A token bound to a "
    "tenant sees and writes only that tenant's campaigns. The token is checked before the "
    "body is read: 401 without a valid token, 403 for a role too low; neither carries data."
)
_ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "properties": {"detail": {"title": "Detail", "type": "string"}},
    "required": ["detail"],
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _ERROR_CONTENT, **extra}


def _responses(role: str | None, basic: bool, has_body: bool) -> dict[str, dict[str, Any]]:
    added: dict[str, dict[str, Any]] = {
        "431": _error("Request line and headers larger than the limit (16 KiB by default)"),
    }
    if role is not None:
        challenge = 'Basic realm="cdrwatch", Bearer' if basic else "Bearer"
        added["401"] = _error(
            "No token, an unknown or a revoked token"
            + (" (Bearer, or HTTP Basic with the token as password)" if basic else ""),
            headers={
                "WWW-Authenticate": {
                    "description": f"`{challenge}`",
                    "schema": {"type": "string"},
                }
            },
        )
        added["403"] = _error(f"The token's role is below `{role}`")
    if has_body:
        added["413"] = _error("Body larger than the route's limit (checked before reading it)")
    return added


def document_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Install the completed OpenAPI generator on `app` (module docstring); returns it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Error"] = _ERROR_SCHEMA
        components["securitySchemes"] = {
            "HTTPBearer": {"type": "http", "scheme": "bearer", "description": _ROLES_TEXT},
            "HTTPBasic": {
                "type": "http",
                "scheme": "basic",
                "description": "HTTP Basic whose password is an ingest token (any user "
                "name): for FreeSWITCH's mod_json_cdr / mod_xml_cdr `cred` parameter.",
            },
        }
        entries = {(e.path, m.lower()): e for e in route_table(app.routes) for m in e.methods or ()}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if method not in _METHODS:
                    continue
                entry = entries.get((path, method))
                role = entry.role if entry is not None else None
                basic = entry.basic if entry is not None else False
                has_body = "requestBody" in operation or method in ("post", "put", "patch")
                responses = operation.setdefault("responses", {})
                for code, response in _responses(role, basic, has_body).items():
                    held = responses.setdefault(code, response)
                    if "headers" in response:  # a route's own 401 lacks the challenge
                        held.setdefault("headers", response["headers"])
                for code, response in responses.items():
                    if code in ("401", "403", "404", "413", "415", "400", "503"):
                        response.setdefault("content", _ERROR_CONTENT)
                if role is not None:
                    operation["x-required-role"] = role
                    operation["security"] = (
                        [{"HTTPBearer": []}, {"HTTPBasic": []}] if basic else [{"HTTPBearer": []}]
                    )
                    note = f"Role: `{role}` or above."
                    text = operation.get("description", "")
                    if note not in text:
                        operation["description"] = f"{note}\n\n{text}".strip()
                else:
                    operation.setdefault("security", [])
        if CDR_SCHEMA_REF in _text_of(schema):
            schemas["CdrV1"] = documented_cdr_schema()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return openapi


def _text_of(value: Any) -> str:
    return orjson.dumps(value).decode()
