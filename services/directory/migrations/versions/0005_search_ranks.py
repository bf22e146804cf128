"""Directory: an impact-ordered index for full-text search on PostgreSQL — each lexeme of each
service with the service's ts_rank for that lexeme as a prefix query, in (score, name, id) order, so
a one-word search reads its page from the index instead of ranking every match (a common word
matches most services). SQLite (FTS5) needs none.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    # lexeme in "C" order: the lexemes that start with a prefix are together, right after it.
    # The name is the service's, for the page order (score, name, id) from the index alone.
    op.execute(
        "CREATE TABLE directory_fts_ranks ("
        'lexeme text COLLATE "C" NOT NULL, '
        "score real NOT NULL, "
        "name varchar(255) NOT NULL, "
        "service_id varchar(36) NOT NULL REFERENCES directory_services (id) ON DELETE CASCADE)"
    )
    op.execute(
        "INSERT INTO directory_fts_ranks (lexeme, score, name, service_id) "
        "SELECT t.lexeme, ts_rank(f.document, ('''' || replace(replace(t.lexeme, '\\', '\\\\'), '''', '''''') "
        "|| ''':*')::tsquery), s.name, f.service_id "
        "FROM directory_fts f JOIN directory_services s ON s.id = f.service_id, unnest(f.document) t"
    )
    op.execute(
        "CREATE INDEX ix_directory_fts_ranks_page ON directory_fts_ranks "
        "(lexeme, score DESC, name, service_id)"
    )
    op.execute("CREATE INDEX ix_directory_fts_ranks_service ON directory_fts_ranks (service_id)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP TABLE directory_fts_ranks")
