"""reconciliation runs, discrepancies and cursors

The reconciler (services/accounts/reconciliation.py) stores each run, the
discrepancies it finds (one open row per problem), and where its
incremental checks go on from. The daily report reads postings by day.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 17:16:19.924951
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reconciliation_cursors',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_reconciliation_cursors'))
    )
    op.create_table('reconciliation_discrepancies',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('fingerprint', sa.String(length=300), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=True),
    sa.Column('account_id', sa.String(length=36), nullable=True),
    sa.Column('entry_id', sa.String(length=36), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('first_run_id', sa.String(length=36), nullable=False),
    sa.Column('last_run_id', sa.String(length=36), nullable=False),
    sa.Column('found_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_discrepancies'))
    )
    with op.batch_alter_table('reconciliation_discrepancies', schema=None) as batch_op:
        batch_op.create_index('ix_discrepancies_status_kind', ['status', 'kind'], unique=False)
        batch_op.create_index('uq_discrepancies_open_fingerprint', ['fingerprint'], unique=True, postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"))

    op.create_table('reconciliation_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('checked', sa.Text(), nullable=False),
    sa.Column('found', sa.Integer(), nullable=False),
    sa.Column('new', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs'))
    )
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_runs_started', ['started_at'], unique=False)

    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.create_index('ix_postings_created_at', ['created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.drop_index('ix_postings_created_at')

    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_reconciliation_runs_started')

    op.drop_table('reconciliation_runs')
    with op.batch_alter_table('reconciliation_discrepancies', schema=None) as batch_op:
        batch_op.drop_index('uq_discrepancies_open_fingerprint', postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"))
        batch_op.drop_index('ix_discrepancies_status_kind')

    op.drop_table('reconciliation_discrepancies')
    op.drop_table('reconciliation_cursors')
