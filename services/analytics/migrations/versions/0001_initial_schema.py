"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 11:22:51.332129
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # analytics_events: every consumed envelope, append-only (position orders the
    # replay); projections rebuilt from it: projected_transfers (one outcome per
    # transfer), monthly_totals / monthly_categories (per user, month, currency
    # [, category]), flows (each transfer per user and direction; anomaly history
    # by user, currency, direction, position), anomalies (flagged outflows),
    # transfer_totals (business metrics); inbox (event_id, handler). No outbox:
    # analytics publishes nothing.
    op.create_table('analytics_events',
    sa.Column('position', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('source', sa.String(length=50), nullable=False),
    sa.Column('occurred_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('received_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_analytics_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_analytics_events_event_id'))
    )
    op.create_table('anomalies',
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('usual_amount', sa.BigInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('occurred_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('transfer_id', 'user_id', name=op.f('pk_anomalies'))
    )
    with op.batch_alter_table('anomalies', schema=None) as batch_op:
        batch_op.create_index('ix_anomalies_user_recent', ['user_id', 'position'], unique=False)

    op.create_table('flows',
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('counterparty', sa.String(length=80), nullable=True),
    sa.Column('reference', sa.Text(), nullable=True),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('occurred_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("direction IN ('in', 'out')", name=op.f('ck_flows_direction_known')),
    sa.PrimaryKeyConstraint('transfer_id', 'user_id', 'direction', name=op.f('pk_flows'))
    )
    with op.batch_alter_table('flows', schema=None) as batch_op:
        batch_op.create_index('ix_flows_history', ['user_id', 'currency', 'direction', 'position'], unique=False)
        batch_op.create_index('ix_flows_user_month', ['user_id', 'month'], unique=False)

    op.create_table('inbox',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('handler', sa.String(length=200), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('handled_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'handler', name=op.f('pk_inbox'))
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_handled_at', ['handled_at'], unique=False)

    op.create_table('monthly_categories',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('inflow', sa.BigInteger(), nullable=False),
    sa.Column('outflow', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'month', 'currency', 'category', name=op.f('pk_monthly_categories'))
    )
    op.create_table('monthly_totals',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('inflow', sa.BigInteger(), nullable=False),
    sa.Column('outflow', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'month', 'currency', name=op.f('pk_monthly_totals'))
    )
    op.create_table('projected_transfers',
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('transfer_id', name=op.f('pk_projected_transfers'))
    )
    op.create_table('transfer_totals',
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('outcome', 'kind', 'currency', 'reason', name=op.f('pk_transfer_totals'))
    )


def downgrade() -> None:
    op.drop_table('transfer_totals')
    op.drop_table('projected_transfers')
    op.drop_table('monthly_totals')
    op.drop_table('monthly_categories')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_handled_at')

    op.drop_table('inbox')
    with op.batch_alter_table('flows', schema=None) as batch_op:
        batch_op.drop_index('ix_flows_user_month')
        batch_op.drop_index('ix_flows_history')

    op.drop_table('flows')
    with op.batch_alter_table('anomalies', schema=None) as batch_op:
        batch_op.drop_index('ix_anomalies_user_recent')

    op.drop_table('anomalies')
    op.drop_table('analytics_events')
