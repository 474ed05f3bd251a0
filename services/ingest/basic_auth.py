"""HTTP Basic auth carrying an ingest token, for PBXs that can send nothing else.

Stock mod_json_cdr and mod_xml_cdr send only `cred = user:password` as HTTP Basic
credentials. The password is an ingest token (`cdrwatch token create --role ingest`); the
user name is ignored (a token in the user name with an empty password is accepted too,
for clients that put it there). A Bearer token works on the same routes.
No token, an unknown one, or a role too low: 401/403, never data.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, status

from services.common.auth import Principal, Role, TokenStore

BASIC_ROLE_ATTRIBUTE = "cdrwatch_basic_role"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="cdrwatch", charset="UTF-8", Bearer'}


def token_from_authorization(value: str | None) -> str | None:
    """The token of an `Authorization` header: Bearer credentials, or the password (else the
    user name) of Basic credentials. None when there is none."""
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return password or user or None


def require_role_basic_or_bearer(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency returning the caller's Principal when a Basic or Bearer token holds
    `role` (the HTTP guard reads `BASIC_ROLE_ATTRIBUTE` to check it before the body)."""

    async def dependency(request: Request) -> Principal:
        token = token_from_authorization(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing credentials: HTTP Basic with an ingest token as password, or "
                "a Bearer token",
                headers=_CHALLENGE,
            )
        tokens: TokenStore = request.app.state.tokens
        principal = await tokens.verify(token)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="invalid or revoked token",
                headers=_CHALLENGE,
            )
        if not principal.can(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"role {role} required")
        return principal

    setattr(dependency, BASIC_ROLE_ATTRIBUTE, role)
    return dependency
