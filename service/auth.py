"""API keys: generation, hashing and the (briefly cached) lookup of the tenant behind a key."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import ApiKey
from service.problems import Unauthorized

KEY_PREFIX = "ssah_"
DISPLAY_PREFIX_LEN = 13  # "ssah_" plus 8 random characters: enough to tell keys apart


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every query of the request is scoped to."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID
    key_prefix: str = ""  # the key's display prefix, for the audit log


def generate_key() -> str:
    """Return a new high-entropy API key (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Return the sha256 hex digest stored for ``key``; a fast hash is fine for 256-bit secrets."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCache:
    """Positive lookups only, kept ``ttl`` seconds, so a revoked key dies within ``ttl``."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def extract_key(authorization: str | None, x_api_key: str | None) -> str:
    """Return the key from ``Authorization: Bearer`` or ``X-API-Key``; 401 when neither is usable."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise Unauthorized("Authorization header must be 'Bearer <key>'")
    if x_api_key:
        return x_api_key.strip()
    raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")


def authenticate(session: Session, key: str, *, cache: KeyCache | None = None) -> Principal:
    """Return the principal owning ``key``; 401 if the key is unknown or revoked."""
    key_hash = hash_key(key)
    if cache is not None and (hit := cache.get(key_hash)) is not None:
        return hit
    row = session.execute(
        sa.select(ApiKey.id, ApiKey.tenant_id, ApiKey.prefix).where(
            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    principal = Principal(tenant_id=row.tenant_id, key_id=row.id, key_prefix=row.prefix)
    if cache is not None:
        cache.put(key_hash, principal)
    return principal
