"""Retention: how many days a tenant's finished jobs are kept (NULL: for ever).

Revision ID: 0007_retention
Revises: 0006_integrations
Create Date: 2026-12-03 10:00:00

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_retention"
down_revision: str | None = "0006_integrations"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add tenants.retention_days (nullable: no retention until a tenant sets one)."""
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop tenants.retention_days (the settings are lost; nothing else was changed)."""
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("retention_days")
