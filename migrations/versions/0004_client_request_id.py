"""Audit log: keep the server-made request id, and the client's X-Request-ID apart in client_request_id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:10:00

Before this revision ``request_id`` held whatever the client sent as ``X-Request-ID``, so a client
could write any id (another request's) into the log. Rows written before it keep their value in
``request_id``: which of them came from clients cannot be told afterwards.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add audit_log.client_request_id (nullable: most clients send none)."""
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_request_id", sa.String(length=200), nullable=True))


def downgrade() -> None:
    """Drop audit_log.client_request_id; the server-made ids stay in request_id."""
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("client_request_id")
