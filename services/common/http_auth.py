"""FastAPI glue for bearer-token auth: 401 without a valid token, 403 for a role too low.

Neither answer carries data. The app puts a `TokenStore` on `app.state.tokens`. Behind
the HTTP guard (services.common.http_security) the check already ran before the body was
read: the dependency finds the guard's principal in the request state and checks it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.auth import Principal, Role, TokenStore
from services.common.http_security import PRINCIPAL_STATE_KEY, ROLE_ATTRIBUTE

_bearer = HTTPBearer(auto_error=False)


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that returns the caller's Principal if it holds `role`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        verified: Principal | None = getattr(request.state, PRINCIPAL_STATE_KEY, None)
        if verified is not None and verified.can(role):
            return verified
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        tokens: TokenStore = request.app.state.tokens
        principal = await tokens.verify(credentials.credentials)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="invalid or revoked token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.can(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"role {role} required")
        return principal

    setattr(dependency, ROLE_ATTRIBUTE, role)  # read by the guard, before the body
    return dependency
