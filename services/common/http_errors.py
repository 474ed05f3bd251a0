"""The 422 answer both apps give for a request FastAPI's validation refuses: FastAPI's own
shape, with each error's `input` JSON-safe and cut to a short excerpt (a 100 kB field is
never echoed back whole)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ECHO_CHARS = 100
MAX_MESSAGE_CHARS = 300


def safe_input(value: Any) -> Any:
    """What a 422 echoes of the input at fault: JSON-safe (NaN and Infinity, which the body
    parser accepts, are not JSON) and at most MAX_ECHO_CHARS characters (plus "...")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        if isinstance(value, int) and value.bit_length() > 53:
            return f"an integer of {value.bit_length()} bits"
        return value
    return _cut(value if isinstance(value, str) else repr(value), MAX_ECHO_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _safe_error(error: dict[str, Any]) -> dict[str, Any]:
    safe = {**error, "input": safe_input(error.get("input"))}
    if isinstance(safe.get("ctx"), dict):  # e.g. a pattern or an expected value
        safe["ctx"] = {
            k: _cut(v, MAX_ECHO_CHARS) if isinstance(v, str) else v for k, v in safe["ctx"].items()
        }
    if isinstance(safe.get("msg"), str):
        safe["msg"] = _cut(safe["msg"], MAX_MESSAGE_CHARS)
    return safe


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_safe_error(dict(error)) for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_validation_handler(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
