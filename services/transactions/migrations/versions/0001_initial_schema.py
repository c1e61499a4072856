"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 10:29:29.691915
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('account_history',
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'transfer_id', name=op.f('pk_account_history'))
    )
    with op.batch_alter_table('account_history', schema=None) as batch_op:
        batch_op.create_index('ix_account_history_account', ['account_id', 'position'], unique=False)

    op.create_table('events',
    sa.Column('position', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('stream_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('correlation_id', sa.String(length=128), nullable=True),
    sa.Column('recorded_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_events')),
    sa.UniqueConstraint('stream_id', 'version', name='uq_events_stream_version')
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

    op.create_table('snapshots',
    sa.Column('stream_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('taken_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('stream_id', name=op.f('pk_snapshots'))
    )
    op.create_table('transfer_requests',
    sa.Column('owner_id', sa.String(length=36), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'idempotency_key', name=op.f('pk_transfer_requests')),
    sa.UniqueConstraint('transfer_id', name=op.f('uq_transfer_requests_transfer_id'))
    )
    op.create_table('transfer_view',
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('failure_reason', sa.String(length=64), nullable=True),
    sa.Column('owner_id', sa.String(length=36), nullable=False),
    sa.Column('to_owner_id', sa.String(length=36), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('from_account_id', sa.String(length=36), nullable=True),
    sa.Column('to_account_id', sa.String(length=36), nullable=True),
    sa.Column('reference', sa.String(length=140), nullable=True),
    sa.Column('steps', sa.Text(), nullable=False),
    sa.Column('deadline', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('transfer_id', name=op.f('pk_transfer_view'))
    )
    with op.batch_alter_table('transfer_view', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transfer_view_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index('ix_transfer_view_pending', ['status', 'deadline'], unique=False)
        batch_op.create_index(batch_op.f('ix_transfer_view_position'), ['position'], unique=False)
        batch_op.create_index(batch_op.f('ix_transfer_view_to_owner_id'), ['to_owner_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('transfer_view', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transfer_view_to_owner_id'))
        batch_op.drop_index(batch_op.f('ix_transfer_view_position'))
        batch_op.drop_index('ix_transfer_view_pending')
        batch_op.drop_index(batch_op.f('ix_transfer_view_owner_id'))

    op.drop_table('transfer_view')
    op.drop_table('transfer_requests')
    op.drop_table('snapshots')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending')

    op.drop_table('outbox')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_handled_at')

    op.drop_table('inbox')
    op.drop_table('events')
    with op.batch_alter_table('account_history', schema=None) as batch_op:
        batch_op.drop_index('ix_account_history_account')

    op.drop_table('account_history')
