"""/v1/admin/reconciliation: runs, discrepancies and the daily report.

Admins only. The reconciler lives in accounts (services/accounts/
reconciliation.py); the gateway checks the role, validates the request and
names the admin who resolved a discrepancy (from the token, never the body).
"""

import csv
import io
from datetime import UTC, date, datetime, timedelta

from flask import Response
from marshmallow import Schema, ValidationError, fields, validate, validates

from gateway.blueprints.risk_admin import BEARER, MAX_NOTE, admin_only
from gateway.bodies import Blueprint
from gateway.extensions import platform, principal
from gateway.schemas import Strict, StrictBoolean, not_blank

blp = Blueprint(
    "reconciliation", __name__, description="Reconciliation runs, discrepancies, daily report"
)

KINDS = [
    "entry_unbalanced",
    "balance_chain_broken",
    "balance_mismatch",
    "held_mismatch",
    "currency_not_conserved",
    "hold_for_ended_transfer",
    "entry_missing",
    "entry_unexpected",
    "entry_mismatch",
    "payment_mismatch",
    "provider_record_missing",
    "provider_amount_mismatch",
    "provider_status_mismatch",
    "provider_operation_unknown",
    "transfer_stuck",
]
_timestamp = fields.String(allow_none=True, metadata={"format": "date-time"})


class OverviewQuery(Schema):
    status = fields.String(
        load_default="open",
        validate=validate.OneOf(["open", "cleared", "resolved", "all"]),
        metadata={"description": "Discrepancies in this state; `all` for every state."},
    )
    kind = fields.String(load_default=None, validate=validate.OneOf(KINDS))
    limit = fields.Integer(load_default=200, validate=validate.Range(min=1, max=1000))


class Discrepancy(Schema):
    discrepancy_id = fields.UUID()
    kind = fields.String(metadata={"enum": KINDS})
    status = fields.String(metadata={"enum": ["open", "cleared", "resolved"]})
    transfer_id = fields.String(allow_none=True)
    account_id = fields.String(allow_none=True)
    entry_id = fields.String(allow_none=True)
    detail = fields.Dict(metadata={"description": "What was seen; amounts in minor units."})
    first_run_id = fields.UUID()
    last_run_id = fields.UUID()
    found_at = _timestamp
    last_seen_at = _timestamp
    closed_at = _timestamp
    closed_by = fields.String(allow_none=True)
    note = fields.String(allow_none=True)


class Run(Schema):
    run_id = fields.UUID()
    scope = fields.String(metadata={"enum": ["incremental", "full"]})
    trigger = fields.String(metadata={"enum": ["schedule", "operator"]})
    status = fields.String(metadata={"enum": ["running", "completed", "failed"]})
    started_at = _timestamp
    finished_at = _timestamp
    checked = fields.Dict(metadata={"description": "Ranges and counts checked."})
    discrepancies_found = fields.Integer()
    discrepancies_new = fields.Integer()
    error = fields.String(allow_none=True)


class RunWithDiscrepancies(Run):
    discrepancies = fields.List(fields.Nested(Discrepancy))


class Overview(Schema):
    runs = fields.List(fields.Nested(Run), metadata={"description": "The latest runs."})
    discrepancies = fields.List(fields.Nested(Discrepancy))


class RunRequest(Strict):
    full = StrictBoolean(
        load_default=False,
        metadata={"description": "Check everything from the start, not only what is new."},
    )


class ResolveRequest(Strict):
    note = fields.String(
        required=True, validate=[validate.Length(min=1, max=MAX_NOTE), not_blank()]
    )


# The provider counts time in Unix seconds: no day before it has a report
# (asking for one was its 400, answered 503).
FIRST_REPORT_DAY = date(1970, 1, 1)


class ReportQuery(Schema):
    day = fields.Date(
        required=True,
        format="%Y-%m-%d",
        metadata={"description": "A UTC day, from 1970-01-01 to tomorrow."},
    )

    @validates("day")
    def _reportable(self, value, **kwargs):
        # Tomorrow: today somewhere; later days have nothing to report (and
        # 9999-12-31 has no next day to end it).
        if not FIRST_REPORT_DAY <= value <= datetime.now(UTC).date() + timedelta(days=1):
            raise ValidationError("Must be a day from 1970-01-01 to tomorrow (UTC).")


@blp.route("/v1/admin/reconciliation", methods=["GET"])
@admin_only
@blp.arguments(OverviewQuery(), location="query")
@blp.response(200, Overview)
@blp.doc(security=BEARER)
def overview(query):
    with platform().rpc.client() as rpc:
        return rpc.accounts.reconciliation_overview(
            status=query["status"], kind=query["kind"], limit=query["limit"]
        )


@blp.route("/v1/admin/reconciliation/runs", methods=["POST"])
@admin_only
@blp.arguments(RunRequest(), required=False)  # {"full": false} when absent
@blp.response(202, RunWithDiscrepancies)
@blp.doc(security=BEARER)
def run(body):
    """Start a reconciliation now: 202 with the run, still running (409 while
    another runs); follow it at /v1/admin/reconciliation/runs/{run_id}."""
    with platform().rpc.client() as rpc:
        started = rpc.accounts.start_reconciliation(full=body["full"])
    return started, 202, {"Location": f"/v1/admin/reconciliation/runs/{started['run_id']}"}


@blp.route("/v1/admin/reconciliation/runs/<uuid:run_id>", methods=["GET"])
@admin_only
@blp.response(200, RunWithDiscrepancies)
@blp.doc(security=BEARER)
def get_run(run_id):
    with platform().rpc.client() as rpc:
        return rpc.accounts.get_reconciliation_run(run_id=str(run_id))


@blp.route("/v1/admin/reconciliation/discrepancies/<uuid:discrepancy_id>/resolve", methods=["POST"])
@admin_only
@blp.arguments(ResolveRequest())
@blp.response(200, Discrepancy)
@blp.doc(security=BEARER)
def resolve(body, discrepancy_id):
    with platform().rpc.client() as rpc:
        return rpc.accounts.resolve_discrepancy(
            discrepancy_id=str(discrepancy_id),
            resolved_by=principal().user_id,
            note=body["note"],
        )


@blp.route("/v1/admin/reconciliation/report", methods=["GET"])
@admin_only
@blp.arguments(ReportQuery(), location="query")
@blp.response(200, content_type="text/csv")
@blp.doc(security=BEARER)
def report(query):
    """The daily report per currency, as CSV (amounts as decimal strings)."""
    with platform().rpc.client() as rpc:
        result = rpc.accounts.daily_report(day=query["day"].isoformat())
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=result["columns"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(result["rows"])
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="reconciliation-{result["day"]}.csv"'
        },
    )
