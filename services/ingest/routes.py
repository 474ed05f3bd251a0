"""`POST /v1/cdrs`. Depends only on `app.state.ingest` (an IngestService) and
`app.state.tokens` (a TokenStore), so that any app can include this router."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from schemas.cdr_v1 import CdrV1
from services.common.auth import Principal
from services.common.http_auth import require_role
from services.ingest.parsing import BodyError
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
# neighbours), so FastAPI does not parse it: the schema is documented here, from CdrV1.
_CDR_V1_SCHEMA = CdrV1.model_json_schema(mode="validation")
_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_CDR_V1_SCHEMA, {"type": "array", "items": _CDR_V1_SCHEMA}]},
                "example": [_RECORD_EXAMPLE],
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one CDR v1 object per line"}
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
