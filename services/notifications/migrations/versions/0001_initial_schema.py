"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 11:22:32.089193
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recipients: the directory (user_registered); preferences: one row per
    # customer who changed the defaults; notifications: one row per (event,
    # customer, channel), its content and delivery state; inbox as every
    # consumer. Boolean defaults are sa.true()/sa.false(), not 1/0, so they
    # work on PostgreSQL too.
    op.create_table('inbox',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('handler', sa.String(length=200), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('handled_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'handler', name=op.f('pk_inbox'))
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_handled_at', ['handled_at'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=100), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('template', sa.String(length=32), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('retryable', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('provider_reference', sa.String(length=200), nullable=True),
    sa.Column('lease_until', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("channel IN ('email', 'sms', 'push')", name=op.f('ck_notifications_channel_known')),
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name=op.f('ck_notifications_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('event_id', 'user_id', 'channel', name='uq_notifications_event_user')
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_user_created', ['user_id', 'created_at'], unique=False)

    op.create_table('preferences',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('email', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('sms', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('push', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('push_token', sa.Text(), nullable=True),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('NOT push OR push_token IS NOT NULL', name=op.f('ck_preferences_push_needs_token')),
    sa.CheckConstraint('NOT sms OR phone IS NOT NULL', name=op.f('ck_preferences_sms_needs_phone')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_preferences'))
    )
    op.create_table('recipients',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=True),
    sa.Column('registered_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_recipients'))
    )


def downgrade() -> None:
    op.drop_table('recipients')
    op.drop_table('preferences')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_user_created')

    op.drop_table('notifications')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_handled_at')

    op.drop_table('inbox')
