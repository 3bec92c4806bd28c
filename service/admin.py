"""Create, revoke and list API keys: ``python -m service.admin keys create --tenant acme``."""

from __future__ import annotations

import sys
import typing

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.audit_log import record_system
from service.auth import DISPLAY_PREFIX_LEN, generate_key, hash_key
from service.db import get_sessionmaker, session_scope
from service.models import ApiKey, Tenant, utcnow
from service.webhooks import rotate_secret


class KeyNotFound(LookupError):
    """No active key has that prefix."""


def create_api_key(session: Session, tenant_name: str) -> str:
    """Create a key for ``tenant_name`` (creating the tenant if new) and return it; only its hash is kept."""
    tenant = session.scalars(sa.select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = generate_key()
    session.add(ApiKey(tenant_id=tenant.id, prefix=key[:DISPLAY_PREFIX_LEN], key_hash=hash_key(key)))
    session.flush()
    return key


def revoke_api_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the active key whose display prefix is ``prefix``; raises KeyNotFound otherwise."""
    key = session.scalars(
        sa.select(ApiKey).where(ApiKey.prefix == prefix[:DISPLAY_PREFIX_LEN], ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if key is None:
        raise KeyNotFound(f"no active key with prefix {prefix!r}")
    key.revoked_at = utcnow()
    session.flush()
    return key


def list_api_keys(session: Session) -> list[tuple[str, str, str, str]]:
    """Rows of (prefix, tenant, created_at, revoked_at or '') for every key, oldest first."""
    rows = session.execute(
        sa.select(ApiKey.prefix, Tenant.name, ApiKey.created_at, ApiKey.revoked_at)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .order_by(ApiKey.created_at)
    )
    return [(p, t, c.isoformat(), r.isoformat() if r else "") for p, t, c, r in rows]


def set_retention(session: Session, tenant_name: str, days: int | None) -> None:
    """Keep ``tenant_name``'s finished jobs ``days`` days (None: for ever); raises LookupError for no such tenant."""
    tenant = session.scalars(sa.select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        raise LookupError(f"no tenant {tenant_name!r}")
    before, tenant.retention_days = tenant.retention_days, days
    record_system(
        session,
        tenant_id=tenant.id,
        action="retention.set",
        resource_type="tenant",
        resource_id=tenant.id,
        details={"retention_days": days, "before": before, "by": "ssah keys"},
    )
    session.flush()


def run_keys_action(
    action: str, *, tenant: str | None = None, prefix: str | None = None, days: int | None = None
) -> int:
    """Create, revoke or list keys, rotate a webhook secret or set retention, printing the result (`ssah keys`,
    whose parser requires --tenant for create, webhook-secret and retention and the prefix for revoke)."""
    for session in session_scope(get_sessionmaker()):
        if action == "retention":
            try:
                set_retention(session, typing.cast(str, tenant), days)
            except LookupError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"{tenant}: finished jobs kept {f'{days} days' if days else 'until deleted'}")
        elif action == "create":
            print(create_api_key(session, typing.cast(str, tenant)))
        elif action == "webhook-secret":
            found = session.scalar(sa.select(Tenant.id).where(Tenant.name == tenant))
            if found is None:
                print(f"error: no tenant {tenant!r}", file=sys.stderr)
                return 1
            print(rotate_secret(session, tenant_id=found)[0])
        elif action == "revoke":
            try:
                revoked = revoke_api_key(session, typing.cast(str, prefix))
            except KeyNotFound as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"revoked {revoked.prefix}")
        else:
            for row in list_api_keys(session):
                print("\t".join(row))
    return 0
