"""transfer_view: listing indexes that hold only what each listing reads

Listings read a party's transfers along (party, position). An index on
position alone only tempted the planner to walk every transfer backwards
for a customer with many (and cost a write per transfer); the received
side now indexes only transfers someone else sent, so a customer's moves
between their own accounts are never scanned to be discarded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('transfer_view', schema=None) as batch_op:
        batch_op.drop_index('ix_transfer_view_position')
        batch_op.drop_index('ix_transfer_view_to_owner')
        batch_op.create_index(
            'ix_transfer_view_received',
            ['to_owner_id', 'position'],
            unique=False,
            postgresql_where=sa.text('to_owner_id <> owner_id'),
            sqlite_where=sa.text('to_owner_id <> owner_id'),
        )


def downgrade() -> None:
    with op.batch_alter_table('transfer_view', schema=None) as batch_op:
        batch_op.drop_index('ix_transfer_view_received')
        batch_op.create_index('ix_transfer_view_to_owner', ['to_owner_id', 'position'], unique=False)
        batch_op.create_index('ix_transfer_view_position', ['position'], unique=False)
