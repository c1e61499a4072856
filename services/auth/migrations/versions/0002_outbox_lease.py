"""outbox lease: a swept row is taken under a lease, not a held lock

The relay publishes staged events from memory after each commit; rows left
pending (a crash between commit and publish) are swept under a lease so a
relay that dies mid-publish only delays them (shared/outbox.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 12:00:00
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_until', shared.sqltypes.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
