"""Directory: indexes for search at scale — services in (name, id) order, services by taxonomy
term and slots by day and time, each answered from the index alone.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index(op.f("ix_directory_services_name"), table_name="directory_services")
    op.create_index("ix_directory_services_name_id", "directory_services", ["name", "id"], unique=False)
    op.drop_index(op.f("ix_directory_service_terms_taxonomy_term_id"), table_name="directory_service_terms")
    op.create_index(
        "ix_directory_service_terms_term_service",
        "directory_service_terms",
        ["taxonomy_term_id", "service_id"],
        unique=False,
    )
    op.create_index(
        "ix_directory_service_slots_day_time",
        "directory_service_slots",
        ["day", "opens_minute", "closes_minute", "service_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_directory_service_slots_day_time", table_name="directory_service_slots")
    op.drop_index("ix_directory_service_terms_term_service", table_name="directory_service_terms")
    op.create_index(
        op.f("ix_directory_service_terms_taxonomy_term_id"),
        "directory_service_terms",
        ["taxonomy_term_id"],
        unique=False,
    )
    op.drop_index("ix_directory_services_name_id", table_name="directory_services")
    op.create_index(op.f("ix_directory_services_name"), "directory_services", ["name"], unique=False)
