"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 09:59:17.454187
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_owner_id'), ['owner_id'], unique=False)

    op.create_table('journal_entries',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_entries'))
    )
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journal_entries_transfer_id'), ['transfer_id'], unique=False)

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

    op.create_table('balances',
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('held', sa.BigInteger(), nullable=False),
    sa.Column('allow_negative', sa.Boolean(), nullable=False),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('allow_negative OR balance - held >= 0', name=op.f('ck_balances_no_overdraft')),
    sa.CheckConstraint('held >= 0', name=op.f('ck_balances_held_not_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_balances_account_id_accounts')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_balances'))
    )
    op.create_table('holds',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('settled_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('amount > 0', name=op.f('ck_holds_amount_positive')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_holds_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds')),
    sa.UniqueConstraint('transfer_id', 'account_id', name='uq_holds_transfer_account')
    )
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_holds_account_id'), ['account_id'], unique=False)

    op.create_table('postings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('balance_after', sa.BigInteger(), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_postings_amount_not_zero')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_postings_account_id_accounts')),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entries.id'], name=op.f('fk_postings_entry_id_journal_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_postings'))
    )
    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.create_index('ix_postings_account_history', ['account_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_postings_entry_id'), ['entry_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_postings_entry_id'))
        batch_op.drop_index('ix_postings_account_history')

    op.drop_table('postings')
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_holds_account_id'))

    op.drop_table('holds')
    op.drop_table('balances')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending')

    op.drop_table('outbox')
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journal_entries_transfer_id'))

    op.drop_table('journal_entries')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_owner_id'))

    op.drop_table('accounts')
