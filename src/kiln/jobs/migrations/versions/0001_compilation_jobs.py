"""compilation_jobs: one row per job, its document as JSON with a schema version.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compilation_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("modified_at", sa.Float, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.UniqueConstraint("tenant", "name", name="uq_jobs_tenant_name"),
    )
    op.create_index("ix_compilation_jobs_tenant", "compilation_jobs", ["tenant"])
    op.create_index("ix_compilation_jobs_status", "compilation_jobs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_compilation_jobs_status", "compilation_jobs")
    op.drop_index("ix_compilation_jobs_tenant", "compilation_jobs")
    op.drop_table("compilation_jobs")
