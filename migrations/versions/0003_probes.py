"""Add probe jobs: the 'probe' job kind and the probe_results table (reasoning-direction probe, refusal direction).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:20:00

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Self-contained on purpose: later model changes must not rewrite what this revision created.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

KINDS_BEFORE = "kind IN ('audit', 'evaluation', 'finetune', 'comparison')"
KINDS_AFTER = "kind IN ('audit', 'evaluation', 'finetune', 'comparison', 'probe')"


def upgrade() -> None:
    """Allow jobs of kind 'probe' and create probe_results (one row per probe job)."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_jobs_kind"), KINDS_AFTER)
    op.create_table(
        "probe_results",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("artifact_uri", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_probe_results_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_probe_results_job_id")),
    )


def downgrade() -> None:
    """Drop probe_results and the probe jobs themselves: the old kind constraint cannot hold them."""
    op.drop_table("probe_results")
    op.execute("DELETE FROM jobs WHERE kind = 'probe'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_jobs_kind"), KINDS_BEFORE)
