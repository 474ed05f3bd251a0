"""`POST /v1/cdrs`. Depends only on `app.state.ingest` (an IngestService) and
`app.state.tokens` (a TokenStore), so that any app can include this router."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from services.common.auth import Principal
from services.common.http_auth import require_role
from services.common.http_openapi import CDR_SCHEMA_REF
from services.ingest.basic_auth import require_role_basic_or_bearer
from services.ingest.dialers import (
    FormatResult,
    freeswitch_document,
    outcomes_of,
    result_of,
    split_outcomes,
)
from services.ingest.formats import DOCUMENT_FORMATS, FORMATS
from services.ingest.formats.base import Mapping
from services.ingest.parsing import BodyError, read_body
from services.ingest.service import IngestResult, IngestService, PublisherUnavailable

router = APIRouter(tags=["ingest"])


def get_ingest_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


IngestServiceDep = Annotated[IngestService, Depends(get_ingest_service)]
IngestPrincipal = Annotated[Principal, Depends(require_role("ingest"))]

_ERROR = {"content": {"application/json": {"example": {"detail": "..."}}}}
_RECORD_EXAMPLE = {
    "call_id": "c-1",
    "campaign_id": "spring-offers",
    "callee_number": "+393471234567",
    "originated_at": "2026-03-02T10:15:00+01:00",
    "answered_at": "2026-03-02T10:15:09+01:00",
    "agent_connected_at": "2026-03-02T10:15:10+01:00",
    "ended_at": "2026-03-02T10:17:00+01:00",
}
# The body is read and validated record by record (a bad record never costs its
# neighbours), so FastAPI does not parse it: the schema is documented here. The CdrV1
# component, with the field reference (schemas.cdr_v1_fields), is added by
# services.common.http_openapi.
_CDR_V1_SCHEMA = {"$ref": CDR_SCHEMA_REF}
_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_CDR_V1_SCHEMA, {"type": "array", "items": _CDR_V1_SCHEMA}]},
                "example": [_RECORD_EXAMPLE],
            },
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "description": "one CDR v1 object (the CdrV1 schema) per line",
                }
            },
        },
    }
}


@router.post(
    "/v1/cdrs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestResult,
    summary="Push call detail records (JSON object, JSON array or NDJSON)",
    responses={
        422: {"model": IngestResult, "description": "No record of the batch is valid"},
        400: {"description": "Body is not JSON", **_ERROR},
        413: {"description": "Too many bytes or records", **_ERROR},
        415: {"description": "Unsupported Content-Type or Content-Encoding", **_ERROR},
        503: {"description": "Broker unavailable; retry after Retry-After seconds", **_ERROR},
    },
    openapi_extra=_OPENAPI_BODY,
)
async def post_cdrs(
    request: Request, principal: IngestPrincipal, service: IngestServiceDep
) -> Response:
    """202 when at least one record was accepted (the rejected ones listed), 422 when none."""
    headers = request.headers
    try:
        result = await service.ingest_body(
            request.stream(),
            principal=principal,
            content_type=headers.get("content-type"),
            content_length=headers.get("content-length"),
            content_encoding=headers.get("content-encoding"),
        )
    except BodyError as exc:
        raise HTTPException(exc.status_code, detail=exc.message) from None
    except PublisherUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the broker is unavailable; nothing of this request was accepted, retry",
            headers={"Retry-After": str(service.retry_after_seconds)},
        ) from None
    return Response(
        content=orjson.dumps(result.model_dump(mode="json")),
        status_code=status.HTTP_202_ACCEPTED if result.accepted else 422,
        media_type="application/json",
    )


# --- dialer formats (issue 9): FreeSWITCH posts and file-shaped bodies ---------------------

BasicOrBearerPrincipal = Annotated[Principal, Depends(require_role_basic_or_bearer("ingest"))]
_FS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": FormatResult, "description": "Accepted, or skipped for good (not a callee leg)"},
    400: {"description": "Body is not a CDR post", **_ERROR},
    401: {"description": "No or unknown token (Basic password or Bearer)", **_ERROR},
    413: {"description": "Body too large", **_ERROR},
    422: {"model": FormatResult, "description": "The CDR can never be taken (permanent)"},
    503: {"description": "Broker unavailable: retry after Retry-After seconds", **_ERROR},
}


async def _map_and_ingest(
    request: Request,
    service: IngestService,
    principal: Principal,
    format_name: str,
    *,
    document: bool,
) -> Response:
    mappings: dict[str, Mapping] = request.app.state.format_mappings
    headers = request.headers
    try:
        body = await read_body(
            request.stream(), headers.get("content-length"), service.settings.max_body_bytes
        )
        if document:
            body = freeswitch_document(body, headers.get("content-type"))
        outcomes = (
            outcomes_of(format_name, body, mappings[format_name])
            if len(body) < 256 * 1024
            else await asyncio.to_thread(outcomes_of, format_name, body, mappings[format_name])
        )
        mapped, rejected, skipped = split_outcomes(outcomes, service.settings.max_records)
    except BodyError as exc:
        raise HTTPException(exc.status_code, detail=exc.message) from None
    metrics = service.metrics
    metrics.count_received("http", len(outcomes))
    metrics.count_rejected("invalid", len(rejected))
    for reason, count in skipped.items():
        metrics.count_skipped(reason, count)
    ingest_result = None
    if mapped:
        try:
            ingest_result = await service.ingest(
                [o.record for o in mapped], principal, count_received=False
            )
        except PublisherUnavailable:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="the broker is unavailable; nothing of this request was accepted, retry",
                headers={"Retry-After": str(service.retry_after_seconds)},
            ) from None
    result = result_of(format_name, mapped, rejected, skipped, ingest_result)
    if result.accepted or not result.rejected:
        code = status.HTTP_200_OK if document else status.HTTP_202_ACCEPTED
    else:
        code = 422
    return Response(
        content=orjson.dumps(result.model_dump(mode="json")),
        status_code=code,
        media_type="application/json",
    )


@router.post(
    "/v1/freeswitch/json_cdr",
    summary="mod_json_cdr posts here (raw JSON or the form field cdr=), one CDR per request",
    response_model=FormatResult,
    responses=_FS_RESPONSES,
)
async def post_freeswitch_json(
    request: Request, principal: BasicOrBearerPrincipal, service: IngestServiceDep
) -> Response:
    """Set `<param name="url" value="http://HOST:8081/v1/freeswitch/json_cdr"/>` and
    `<param name="cred" value="freeswitch:INGEST_TOKEN"/>` in json_cdr.conf.xml."""
    return await _map_and_ingest(request, service, principal, "freeswitch-json", document=True)


@router.post(
    "/v1/freeswitch/xml_cdr",
    summary="mod_xml_cdr posts here (form field cdr=, or text/xml), one CDR per request",
    response_model=FormatResult,
    responses=_FS_RESPONSES,
)
async def post_freeswitch_xml(
    request: Request, principal: BasicOrBearerPrincipal, service: IngestServiceDep
) -> Response:
    """Set `<param name="url" value="http://HOST:8081/v1/freeswitch/xml_cdr"/>` and
    `<param name="cred" value="freeswitch:INGEST_TOKEN"/>` in xml_cdr.conf.xml."""
    return await _map_and_ingest(request, service, principal, "freeswitch-xml", document=True)


@router.post(
    "/v1/cdrs/formats/{format_name}",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Push a dialer's own file content (Asterisk Master.csv, CEL, VICIdial CSV, ...)",
    response_model=FormatResult,
    responses={
        404: {"description": "Unknown format", **_ERROR},
        413: {"description": "Too many bytes or calls", **_ERROR},
        422: {"model": FormatResult, "description": "No call of the body could be taken"},
        503: {"description": "Broker unavailable; retry after Retry-After seconds", **_ERROR},
    },
)
async def post_format(
    format_name: str, request: Request, principal: IngestPrincipal, service: IngestServiceDep
) -> Response:
    """The body is mapped with the format's mapping (docs/integrations/<format>.md); every
    rejected call is named by its first source line. Skipped legs are counted."""
    if format_name not in FORMATS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"unknown format; one of {', '.join(FORMATS)}",
        )
    return await _map_and_ingest(
        request, service, principal, format_name, document=format_name in DOCUMENT_FORMATS
    )
