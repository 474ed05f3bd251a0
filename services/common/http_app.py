"""What every cdrwatch FastAPI app gets (api and ingest alike): the HTTP guard (auth before
the body, body limits, security headers), the short-excerpt 422 handler, /docs served from
this origin, and `serve_app` to run it under uvicorn with the server limits."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.http_docs import install_docs
from services.common.http_errors import install_validation_handler
from services.common.http_openapi import document_openapi
from services.common.http_security import HttpGuard
from services.common.http_server import serve
from services.common.settings import IngestSettings

CDRS_ROUTE = ("POST", "/v1/cdrs")
# Dialer-format routes (services/ingest/routes.py) take bodies as large as POST /v1/cdrs.
DIALER_ROUTES = (
    ("POST", "/v1/cdrs/formats/{format_name}"),
    ("POST", "/v1/freeswitch/json_cdr"),
    ("POST", "/v1/freeswitch/xml_cdr"),
)


def harden_app(app: FastAPI, settings: IngestSettings) -> None:
    """Install the guard, the 422 handler, /docs and the completed OpenAPI
    (services.common.http_openapi) on `app` (built with docs_url=None, redoc_url=None).
    POST /v1/cdrs takes `max_body_bytes`, every other route `http_max_body_bytes`."""
    install_validation_handler(app)
    install_docs(app)
    document_openapi(app)
    app.add_middleware(
        HttpGuard,
        default_max_body_bytes=settings.http_max_body_bytes,
        body_limits={
            CDRS_ROUTE: settings.max_body_bytes,
            **dict.fromkeys(DIALER_ROUTES, settings.max_body_bytes),
        },
    )


def serve_app(app: FastAPI, settings: IngestSettings) -> None:
    """Serve `app` on settings.host:settings.port (127.0.0.1 by default) until stopped."""
    serve(
        app,
        host=settings.host,
        port=settings.port,
        header_timeout_seconds=settings.http_header_timeout_seconds,
        keep_alive_seconds=settings.http_keep_alive_seconds,
        max_header_bytes=settings.http_max_header_bytes,
    )
