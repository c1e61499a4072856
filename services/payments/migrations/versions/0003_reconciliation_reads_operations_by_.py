"""reconciliation reads operations by window

The reconciler compares the operations made in a time window with the
provider's records (services/payments/reconciliation.py); the daily report
sums those that finished on a day.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:52:03.033262
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('provider_operations', schema=None) as batch_op:
        batch_op.create_index('ix_provider_operations_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_provider_operations_finished_at', ['finished_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_operations', schema=None) as batch_op:
        batch_op.drop_index('ix_provider_operations_finished_at')
        batch_op.drop_index('ix_provider_operations_created_at')

