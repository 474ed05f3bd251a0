"""FastAPI glue for bearer-token auth: 401 without a valid token, 403 for a role too low.

Neither answer carries data. The app puts a `TokenStore` on `app.state.tokens`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.auth import Principal, Role, TokenStore

_bearer = HTTPBearer(auto_error=False)


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that returns the caller's Principal if it holds `role`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
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

    return dependency
