"""saga: entries per transfer kind, closed transfers, inbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:29:29.614012
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('closed_transfers',
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('closed_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('transfer_id', name=op.f('pk_closed_transfers'))
    )
    op.create_table('inbox',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('handler', sa.String(length=200), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('handled_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'handler', name=op.f('pk_inbox'))
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_handled_at', ['handled_at'], unique=False)

    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='adjustment', nullable=False))
        batch_op.create_unique_constraint('uq_journal_transfer_kind', ['transfer_id', 'kind'])



def downgrade() -> None:
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.drop_constraint('uq_journal_transfer_kind', type_='unique')
        batch_op.drop_column('kind')

    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_handled_at')

    op.drop_table('inbox')
    op.drop_table('closed_transfers')
