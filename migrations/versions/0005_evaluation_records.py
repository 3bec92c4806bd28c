"""Evaluation records in the database: one row per prompt x condition (x suffix) of a succeeded evaluation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

Evaluations that succeeded before this revision keep their records only in the stored evaluation.json
(``GET /v1/evaluations/{id}/result``): the migration cannot read the artifact store to copy them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Self-contained on purpose: later model changes must not rewrite what this revision created.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create evaluation_records (the engine's record plus the columns the records API filters on)."""
    op.create_table(
        "evaluation_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt_set", sa.String(length=16), nullable=False),
        sa.Column("condition", sa.String(length=16), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("judge_verdict", sa.String(length=16), nullable=True),
        sa.Column("record", JSON, nullable=False),
        sa.CheckConstraint("prompt_set IN ('harmful', 'harmless')", name=op.f("ck_evaluation_records_prompt_set")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_evaluation_records_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_records")),
        sa.UniqueConstraint("job_id", "position", name="uq_evaluation_records_job_id_position"),
    )


def downgrade() -> None:
    """Drop evaluation_records; every record is still in its evaluation's stored evaluation.json."""
    op.drop_table("evaluation_records")
