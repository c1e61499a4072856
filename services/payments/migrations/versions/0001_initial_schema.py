"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 10:41:10.670533
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('headers', sa.Text(), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('published_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_event_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending', ['published_at', 'id'], unique=False)

    op.create_table('provider_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('provider_reference', sa.String(length=100), nullable=True),
    sa.Column('idempotency_key', sa.String(length=100), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('operation_id', sa.String(length=36), nullable=True),
    sa.Column('received_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_events')),
    sa.UniqueConstraint('provider', 'event_id', name='uq_provider_events_provider_event')
    )
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_events_idempotency_key'), ['idempotency_key'], unique=False)

    op.create_table('provider_operations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('idempotency_key', sa.String(length=100), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('provider_reference', sa.String(length=100), nullable=True),
    sa.Column('reason', sa.String(length=100), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('transfer', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('in_flight', 'succeeded', 'failed')", name=op.f('ck_provider_operations_known_status')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_provider_operations_amount_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_operations')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_provider_operations_idempotency_key')),
    sa.UniqueConstraint('kind', 'transfer_id', name='uq_provider_operations_kind_transfer')
    )
    with op.batch_alter_table('provider_operations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_operations_provider_reference'), ['provider_reference'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('provider_operations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_operations_provider_reference'))

    op.drop_table('provider_operations')
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_events_idempotency_key'))

    op.drop_table('provider_events')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending')

    op.drop_table('outbox')
