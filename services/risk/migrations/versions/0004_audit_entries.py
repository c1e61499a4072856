"""audit entries: rule and tier changes and review decisions, with who made them

Each entry is written in the transaction of the change it records, naming
the broker identity that called and the user it acted for (shared/audit.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:00:00
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.String(length=36), nullable=False),
    sa.Column('at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor_identity', sa.String(length=64), nullable=True),
    sa.Column('actor_user_id', sa.String(length=64), nullable=True),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entries')),
    sa.UniqueConstraint('entry_id', name=op.f('uq_audit_entries_entry_id'))
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_action', ['action', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_action')

    op.drop_table('audit_entries')
