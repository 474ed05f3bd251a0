"""Bearer tokens with roles (SPEC "Auth").

Roles: `ingest` writes CDRs only; `viewer` reads; `compliance` is viewer plus ack and
reports; `admin` does everything. A token may be bound to a tenant: it then sees and
writes only that tenant's campaigns. Tokens are 256-bit random strings; only their
SHA-256 is stored (a slow password hash buys nothing for a random 256-bit secret, and the
check runs on every request). Verified tokens are cached briefly so the write path does
not hit the database on every request; revocation takes effect within the cache TTL.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import api_tokens

Role = Literal["ingest", "viewer", "compliance", "admin"]
ROLES: tuple[Role, ...] = ("ingest", "viewer", "compliance", "admin")
TOKEN_PREFIX = "cdrw_"  # noqa: S105 - a public prefix, not a secret

# Which roles satisfy a required role.
_GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest", "admin"}),
    "viewer": frozenset({"viewer", "compliance", "admin"}),
    "compliance": frozenset({"compliance", "admin"}),
    "admin": frozenset({"admin"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    tenant_id: str | None
    # Who holds the token (`token create --name`) and its public prefix; an ack or note
    # records `name`, or the prefix for a token created without one.
    name: str | None = None
    token_prefix: str | None = None

    @property
    def author(self) -> str:
        return self.name or self.token_prefix or self.role

    def can(self, required: Role) -> bool:
        return self.role in _GRANTS[required]

    def sees_tenant(self, tenant_id: str | None) -> bool:
        """A tenant-bound token sees only its tenant; an unbound one sees all."""
        return self.tenant_id is None or self.tenant_id == tenant_id


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as `cdrwatch token list` shows it: never the secret nor its hash."""

    prefix: str
    name: str | None
    role: str
    tenant_id: str | None
    created_at: datetime
    revoked_at: datetime | None


MAX_NAME_LENGTH = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Creates and verifies tokens against the `api_tokens` table."""

    def __init__(self, engine: AsyncEngine, cache_ttl_seconds: float = 30.0) -> None:
        self._engine = engine
        self._ttl = cache_ttl_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create(
        self, role: Role, tenant_id: str | None = None, name: str | None = None
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if name is not None:
            name = name.strip()
            if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
                raise ValueError(f"a token name is 1 to {MAX_NAME_LENGTH} printable characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self._engine.begin() as conn:
            await conn.execute(
                api_tokens.insert().values(
                    token_hash=hash_token(token),
                    token_prefix=token[:12],
                    role=role,
                    tenant_id=tenant_id,
                    name=name,
                    created_at=datetime.now(UTC),
                )
            )
        return token

    async def list_tokens(self) -> list[TokenInfo]:
        """Every token, oldest first, revoked ones included."""
        query = sa.select(
            api_tokens.c.token_prefix,
            api_tokens.c.name,
            api_tokens.c.role,
            api_tokens.c.tenant_id,
            api_tokens.c.created_at,
            api_tokens.c.revoked_at,
        ).order_by(api_tokens.c.created_at, api_tokens.c.token_prefix)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [TokenInfo(*row) for row in rows]

    async def verify(self, token: str) -> Principal | None:
        """The token's principal, or None for an unknown or revoked token."""
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        api_tokens.c.role,
                        api_tokens.c.tenant_id,
                        api_tokens.c.name,
                        api_tokens.c.token_prefix,
                    ).where(api_tokens.c.token_hash == digest, api_tokens.c.revoked_at.is_(None))
                )
            ).first()
        principal = (
            Principal(
                role=row.role,
                tenant_id=row.tenant_id,
                name=row.name,
                token_prefix=row.token_prefix,
            )
            if row
            else None
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
        return principal

    async def revoke(self, token_prefix: str) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                api_tokens.update()
                .where(api_tokens.c.token_prefix == token_prefix, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._cache.clear()
        return int(result.rowcount or 0)
