"""Directory: organisations, services and their locations, schedules, areas and taxonomy terms;
partner edits under moderation; warm handovers; the registry places read-model; full-text search.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import BigIntegerKey, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_edit_history",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("edit_id", sa.String(length=36), nullable=False),
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_directory_edit_history")),
    )
    op.create_index(
        op.f("ix_directory_edit_history_edit_id"), "directory_edit_history", ["edit_id"], unique=False
    )
    op.create_index(
        op.f("ix_directory_edit_history_service_id"), "directory_edit_history", ["service_id"], unique=False
    )
    op.create_table(
        "directory_edits",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("proposal", sa.Text(), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("reviewed_by", sa.String(length=128), nullable=True),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_edits")),
    )
    op.create_index(op.f("ix_directory_edits_owner"), "directory_edits", ["owner"], unique=False)
    op.create_index(op.f("ix_directory_edits_service_id"), "directory_edits", ["service_id"], unique=False)
    op.create_index(op.f("ix_directory_edits_state"), "directory_edits", ["state"], unique=False)
    op.create_table(
        "directory_handover_history",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("handover_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_directory_handover_history")),
    )
    op.create_index(
        op.f("ix_directory_handover_history_handover_id"),
        "directory_handover_history",
        ["handover_id"],
        unique=False,
    )
    op.create_table(
        "directory_handovers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("offered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_handovers")),
        sa.UniqueConstraint("referral_id", "service_id", name="uq_directory_handovers_referral"),
    )
    op.create_index(op.f("ix_directory_handovers_owner"), "directory_handovers", ["owner"], unique=False)
    op.create_index(
        op.f("ix_directory_handovers_person_id"), "directory_handovers", ["person_id"], unique=False
    )
    op.create_index(
        op.f("ix_directory_handovers_referral_id"), "directory_handovers", ["referral_id"], unique=False
    )
    op.create_index(
        op.f("ix_directory_handovers_service_id"), "directory_handovers", ["service_id"], unique=False
    )
    op.create_index(op.f("ix_directory_handovers_state"), "directory_handovers", ["state"], unique=False)
    op.create_table(
        "directory_organizations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("identifier", sa.String(length=32), nullable=False),
        sa.Column("identifier_scheme", sa.String(length=16), nullable=False),
        sa.Column("vcfse_category", sa.String(length=32), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_organizations")),
        sa.UniqueConstraint("identifier", name=op.f("uq_directory_organizations_identifier")),
    )
    op.create_index(
        op.f("ix_directory_organizations_modified_at"),
        "directory_organizations",
        ["modified_at"],
        unique=False,
    )
    op.create_table(
        "directory_places",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("districts", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_places")),
    )
    op.create_index(op.f("ix_directory_places_key"), "directory_places", ["key"], unique=False)
    op.create_table(
        "directory_taxonomies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_taxonomies")),
    )
    op.create_table(
        "directory_services",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("minimum_age", sa.Integer(), nullable=True),
        sa.Column("maximum_age", sa.Integer(), nullable=True),
        sa.Column("has_service_area", sa.Boolean(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["directory_organizations.id"],
            name=op.f("fk_directory_services_organization_id_directory_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_services")),
    )
    op.create_index(
        op.f("ix_directory_services_modified_at"), "directory_services", ["modified_at"], unique=False
    )
    op.create_index(op.f("ix_directory_services_name"), "directory_services", ["name"], unique=False)
    op.create_index(
        op.f("ix_directory_services_organization_id"), "directory_services", ["organization_id"], unique=False
    )
    op.create_table(
        "directory_taxonomy_terms",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("taxonomy_id", sa.String(length=36), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["taxonomy_id"],
            ["directory_taxonomies.id"],
            name=op.f("fk_directory_taxonomy_terms_taxonomy_id_directory_taxonomies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_taxonomy_terms")),
    )
    op.create_index(
        op.f("ix_directory_taxonomy_terms_code"), "directory_taxonomy_terms", ["code"], unique=False
    )
    op.create_index(
        op.f("ix_directory_taxonomy_terms_taxonomy_id"),
        "directory_taxonomy_terms",
        ["taxonomy_id"],
        unique=False,
    )
    op.create_table(
        "directory_service_at_locations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("location_id", sa.String(length=36), nullable=False),
        sa.Column("latitude", sa.Double(), nullable=True),
        sa.Column("longitude", sa.Double(), nullable=True),
        sa.Column("postcode", sa.String(length=10), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["directory_services.id"],
            name=op.f("fk_directory_service_at_locations_service_id_directory_services"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_service_at_locations")),
    )
    op.create_index(
        "ix_directory_sal_position", "directory_service_at_locations", ["latitude", "longitude"], unique=False
    )
    op.create_index(
        op.f("ix_directory_service_at_locations_location_id"),
        "directory_service_at_locations",
        ["location_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_directory_service_at_locations_service_id"),
        "directory_service_at_locations",
        ["service_id"],
        unique=False,
    )
    op.create_table(
        "directory_service_districts",
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("district", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["directory_services.id"],
            name=op.f("fk_directory_service_districts_service_id_directory_services"),
        ),
        sa.PrimaryKeyConstraint("service_id", "district", name=op.f("pk_directory_service_districts")),
    )
    op.create_index(
        op.f("ix_directory_service_districts_district"),
        "directory_service_districts",
        ["district"],
        unique=False,
    )
    op.create_table(
        "directory_service_slots",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.String(length=2), nullable=False),
        sa.Column("opens_minute", sa.Integer(), nullable=False),
        sa.Column("closes_minute", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["directory_services.id"],
            name=op.f("fk_directory_service_slots_service_id_directory_services"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_directory_service_slots")),
    )
    op.create_index(
        op.f("ix_directory_service_slots_service_id"), "directory_service_slots", ["service_id"], unique=False
    )
    op.create_table(
        "directory_service_terms",
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("taxonomy_term_id", sa.String(length=36), nullable=False),
        sa.Column("taxonomy_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["directory_services.id"],
            name=op.f("fk_directory_service_terms_service_id_directory_services"),
        ),
        sa.PrimaryKeyConstraint("service_id", "taxonomy_term_id", name=op.f("pk_directory_service_terms")),
    )
    op.create_index(
        op.f("ix_directory_service_terms_taxonomy_id"),
        "directory_service_terms",
        ["taxonomy_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_directory_service_terms_taxonomy_term_id"),
        "directory_service_terms",
        ["taxonomy_term_id"],
        unique=False,
    )
    create_search_table()


def create_search_table() -> None:
    """Full-text search over services, by dialect: FTS5 (BM25 ranking) on SQLite; a tsvector with
    a GIN index on PostgreSQL (ts_rank). Skipped by autogenerate (see shared.migrations.is_managed)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE directory_fts USING fts5("
            "service_id UNINDEXED, name, description, terms, tokenize = 'porter unicode61')"
        )
    else:
        op.execute(
            "CREATE TABLE directory_fts (service_id varchar(36) PRIMARY KEY, document tsvector NOT NULL)"
        )
        op.execute("CREATE INDEX ix_directory_fts_document ON directory_fts USING gin (document)")


def downgrade() -> None:
    op.execute("DROP TABLE directory_fts")
    op.drop_index(op.f("ix_directory_service_terms_taxonomy_term_id"), table_name="directory_service_terms")
    op.drop_index(op.f("ix_directory_service_terms_taxonomy_id"), table_name="directory_service_terms")
    op.drop_table("directory_service_terms")
    op.drop_index(op.f("ix_directory_service_slots_service_id"), table_name="directory_service_slots")
    op.drop_table("directory_service_slots")
    op.drop_index(op.f("ix_directory_service_districts_district"), table_name="directory_service_districts")
    op.drop_table("directory_service_districts")
    op.drop_index(
        op.f("ix_directory_service_at_locations_service_id"), table_name="directory_service_at_locations"
    )
    op.drop_index(
        op.f("ix_directory_service_at_locations_location_id"), table_name="directory_service_at_locations"
    )
    op.drop_index("ix_directory_sal_position", table_name="directory_service_at_locations")
    op.drop_table("directory_service_at_locations")
    op.drop_index(op.f("ix_directory_taxonomy_terms_taxonomy_id"), table_name="directory_taxonomy_terms")
    op.drop_index(op.f("ix_directory_taxonomy_terms_code"), table_name="directory_taxonomy_terms")
    op.drop_table("directory_taxonomy_terms")
    op.drop_index(op.f("ix_directory_services_organization_id"), table_name="directory_services")
    op.drop_index(op.f("ix_directory_services_name"), table_name="directory_services")
    op.drop_index(op.f("ix_directory_services_modified_at"), table_name="directory_services")
    op.drop_table("directory_services")
    op.drop_table("directory_taxonomies")
    op.drop_index(op.f("ix_directory_places_key"), table_name="directory_places")
    op.drop_table("directory_places")
    op.drop_index(op.f("ix_directory_organizations_modified_at"), table_name="directory_organizations")
    op.drop_table("directory_organizations")
    op.drop_index(op.f("ix_directory_handovers_state"), table_name="directory_handovers")
    op.drop_index(op.f("ix_directory_handovers_service_id"), table_name="directory_handovers")
    op.drop_index(op.f("ix_directory_handovers_referral_id"), table_name="directory_handovers")
    op.drop_index(op.f("ix_directory_handovers_person_id"), table_name="directory_handovers")
    op.drop_index(op.f("ix_directory_handovers_owner"), table_name="directory_handovers")
    op.drop_table("directory_handovers")
    op.drop_index(op.f("ix_directory_handover_history_handover_id"), table_name="directory_handover_history")
    op.drop_table("directory_handover_history")
    op.drop_index(op.f("ix_directory_edits_state"), table_name="directory_edits")
    op.drop_index(op.f("ix_directory_edits_service_id"), table_name="directory_edits")
    op.drop_index(op.f("ix_directory_edits_owner"), table_name="directory_edits")
    op.drop_table("directory_edits")
    op.drop_index(op.f("ix_directory_edit_history_service_id"), table_name="directory_edit_history")
    op.drop_index(op.f("ix_directory_edit_history_edit_id"), table_name="directory_edit_history")
    op.drop_table("directory_edit_history")
