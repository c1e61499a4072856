"""rules as data, reviews, customers, failed logins

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:16:02.573915
"""

import sqlalchemy as sa
from alembic import op

import shared.sqltypes

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rules become data (rule_sets, customers' tiers); reviews hold transfers
    # for an admin; auth's failed logins are kept; an assessment records
    # the customer, the beneficiary, the rules version and the figures.
    op.create_table('customers',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('updated_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_customers'))
    )
    op.create_table('login_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('factor', sa.String(length=16), nullable=True),
    sa.Column('occurred_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_login_failures_user_time', ['user_id', 'occurred_at'], unique=False)

    op.create_table('reviews',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('review_id', sa.String(length=36), nullable=False),
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=36), nullable=True),
    sa.Column('recipient_id', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('transfer', sa.Text(), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('decided_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.String(length=36), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'expired', 'withdrawn')", name=op.f('ck_reviews_status_known')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_reviews')),
    sa.UniqueConstraint('review_id', name=op.f('uq_reviews_review_id')),
    sa.UniqueConstraint('transfer_id', name=op.f('uq_reviews_transfer_id'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index('ix_reviews_status_expires', ['status', 'expires_at'], unique=False)

    op.create_table('rule_sets',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_rule_sets'))
    )
    with op.batch_alter_table('assessments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('beneficiary', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('tier', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('rules_version', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('final_decision', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('signals', sa.Text(), server_default='{}', nullable=False))
        batch_op.create_index('ix_assessments_owner', ['owner_id', 'id'], unique=False)
        batch_op.create_index('ix_assessments_owner_beneficiary', ['owner_id', 'beneficiary'], unique=False)
    # Every earlier decision was final (approve or reject). The column stays
    # nullable (NULL reads as `decision`) so that instances still running the
    # previous release keep inserting during a rolling deploy.
    op.execute("UPDATE assessments SET final_decision = decision")
    op.create_table('ended_transfers',
    sa.Column('transfer_id', sa.String(length=36), nullable=False),
    sa.Column('reason', sa.String(length=100), nullable=True),
    sa.Column('ended_at', shared.sqltypes.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('transfer_id', name=op.f('pk_ended_transfers'))
    )


def downgrade() -> None:
    op.drop_table('ended_transfers')
    with op.batch_alter_table('assessments', schema=None) as batch_op:
        batch_op.drop_index('ix_assessments_owner_beneficiary')
        batch_op.drop_index('ix_assessments_owner')
        batch_op.drop_column('signals')
        batch_op.drop_column('final_decision')
        batch_op.drop_column('rules_version')
        batch_op.drop_column('tier')
        batch_op.drop_column('beneficiary')
        batch_op.drop_column('owner_id')

    op.drop_table('rule_sets')
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index('ix_reviews_status_expires')

    op.drop_table('reviews')
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_user_time')

    op.drop_table('login_failures')
    op.drop_table('customers')
