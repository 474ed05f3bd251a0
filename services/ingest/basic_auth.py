"""HTTP Basic auth carrying an ingest token, for PBXs that can send nothing else.

Stock mod_json_cdr and mod_xml_cdr send only `cred = user:password` as HTTP Basic
credentials. The password is an ingest token (`cdrwatch token create --role ingest`); the
user name is ignored (a token in the user name with an empty password is accepted too,
for clients that put it there). A Bearer token works on the same routes.
No token, an unknown one, or a role too low: 401/403, never data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, status

from services.common.auth import Principal, Role, TokenStore
from services.common.http_security import (
    BASIC_AUTH_ATTRIBUTE,
    BASIC_CHALLENGE,
    PRINCIPAL_STATE_KEY,
    ROLE_ATTRIBUTE,
    basic_or_bearer_token,
)

_CHALLENGE = {"WWW-Authenticate": BASIC_CHALLENGE}


def token_from_authorization(value: str | None) -> str | None:
    """The token of an `Authorization` header: Bearer credentials, or the password (else the
    user name) of Basic credentials. None when there is none."""
    if not value:
        return None
    return basic_or_bearer_token([(b"authorization", value.encode("latin-1", "replace"))])


def require_role_basic_or_bearer(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency returning the caller's Principal when a Basic or Bearer token holds
    `role` (behind the HTTP guard the check already ran before the body was read)."""

    async def dependency(request: Request) -> Principal:
        verified: Principal | None = getattr(request.state, PRINCIPAL_STATE_KEY, None)
        if verified is not None and verified.can(role):
            return verified
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

    # read by the HTTP guard, which checks the token before the body is read
    setattr(dependency, ROLE_ATTRIBUTE, role)
    setattr(dependency, BASIC_AUTH_ATTRIBUTE, True)
    return dependency
