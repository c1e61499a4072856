"""lean saga: account history without status; listing indexes per party

account_history.status duplicated transfer_view.status (the listing reads
the view's); a customer's transfers are listed newest first as either
party, so each party column is indexed with the listing position.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('account_history', schema=None) as batch_op:
        batch_op.drop_column('status')
    with op.batch_alter_table('transfer_view', schema=None) as batch_op:
        batch_op.drop_index('ix_transfer_view_owner_id')
        batch_op.drop_index('ix_transfer_view_to_owner_id')
        batch_op.create_index('ix_transfer_view_owner', ['owner_id', 'position'], unique=False)
        batch_op.create_index('ix_transfer_view_to_owner', ['to_owner_id', 'position'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('transfer_view', schema=None) as batch_op:
        batch_op.drop_index('ix_transfer_view_to_owner')
        batch_op.drop_index('ix_transfer_view_owner')
        batch_op.create_index('ix_transfer_view_to_owner_id', ['to_owner_id'], unique=False)
        batch_op.create_index('ix_transfer_view_owner_id', ['owner_id'], unique=False)
    with op.batch_alter_table('account_history', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('status', sa.String(length=16), nullable=False, server_default='pending')
        )
    op.execute(
        "UPDATE account_history SET status = (SELECT v.status FROM transfer_view v"
        " WHERE v.transfer_id = account_history.transfer_id)"
    )
