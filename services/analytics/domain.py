"""analytics' rules, as pure functions over plain values (standard library only).

- Months are UTC calendar months, "YYYY-MM".
- A completed transfer becomes one or two flows: money in or out for a
  user, with a category. Deposits are "top-up", payouts "payout"; internal
  transfers are categorised from their reference by the keyword rules in
  CATEGORY_RULES (first match wins, "other" otherwise); an internal transfer
  between two accounts of the same user is "own-transfer" (an outflow and an
  inflow of the same user, net zero), which is never counted as spending.
- Insights: spending change against the previous month, the largest outflow
  of the month, recurring payments.
- Anomalies: a robust z-score of an outflow against the user's earlier
  outflows in the same currency (median and MAD).
"""

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from shared import config, contracts
from shared.money import format_minor
from shared.robust import median_and_mad, robust_score  # noqa: F401 (part of this module's API)

# -- months ---------------------------------------------------------------------

MONTH_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def is_month(value: object) -> bool:
    return isinstance(value, str) and MONTH_RE.match(value) is not None


def month_of(moment: datetime | date) -> str:
    """The UTC month of an aware datetime (or of a date)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime: analytics months are UTC")
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def shift_month(month: str, delta: int) -> str:
    year, number = int(month[:4]), int(month[5:7])
    index = year * 12 + (number - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def previous_month(month: str) -> str:
    return shift_month(month, -1)


def month_name(month: str) -> str:
    return MONTH_NAMES[int(month[5:7]) - 1]


# -- categories -------------------------------------------------------------------

TOP_UP = "top-up"
PAYOUT = "payout"
OWN_TRANSFER = "own-transfer"
OTHER = "other"

# Keyword rules for internal transfers: (category, keywords). A keyword is one
# or more words matched against the reference's words (case-insensitive,
# letters and digits only); the first rule with a match wins.
CATEGORY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("salary", ("salary", "payroll", "wage", "wages", "paycheck", "pay slip", "bonus")),
    ("rent", ("rent", "landlord", "lease", "mortgage", "housing")),
    (
        "groceries",
        ("grocery", "groceries", "supermarket", "aldi", "lidl", "tesco", "carrefour",
         "rewe", "edeka", "whole foods", "sainsbury", "market"),
    ),
    (
        "utilities",
        ("utility", "utilities", "electricity", "electric", "power bill", "gas bill", "water bill",
         "heating", "internet", "broadband", "phone bill", "mobile", "energy"),
    ),
    (
        "transport",
        ("transport", "uber", "lyft", "bolt", "taxi", "cab", "train", "rail", "bus", "metro",
         "subway", "tram", "transit", "fuel", "petrol", "parking", "toll"),
    ),
    (
        "subscriptions",
        ("subscription", "netflix", "spotify", "disney", "hulu", "youtube premium", "icloud",
         "membership"),
    ),
    (
        "dining",
        ("restaurant", "cafe", "coffee", "pizza", "sushi", "burger", "lunch", "dinner",
         "breakfast", "takeaway", "bar"),
    ),
    ("health", ("pharmacy", "doctor", "dentist", "clinic", "hospital", "gym", "fitness")),
    ("insurance", ("insurance", "premium")),
    ("travel", ("hotel", "airbnb", "flight", "airline", "hostel", "holiday", "vacation")),
    ("shopping", ("amazon", "ebay", "zalando", "ikea", "shop", "shopping", "store")),
    ("education", ("tuition", "school", "course", "university", "books")),
    ("savings", ("savings", "saving", "investment", "deposit box", "pension")),
    ("gifts", ("gift", "birthday", "present", "donation", "charity")),
)  # fmt: skip

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str | None) -> list[str]:
    return _WORD.findall((text or "").lower())


def _compiled_rules() -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
    return tuple(
        (category, tuple(tuple(words(keyword)) for keyword in keywords))
        for category, keywords in CATEGORY_RULES
    )


_RULES = _compiled_rules()


def _contains(haystack: Sequence[str], needle: tuple[str, ...]) -> bool:
    size = len(needle)
    return any(tuple(haystack[i : i + size]) == needle for i in range(len(haystack) - size + 1))


def category_of_reference(reference: str | None) -> str:
    tokens = words(reference)
    for category, keywords in _RULES:
        if any(_contains(tokens, keyword) for keyword in keywords):
            return category
    return OTHER


def categorize(kind: str, reference: str | None, own_transfer: bool = False) -> str:
    if kind == contracts.KIND_DEPOSIT:
        return TOP_UP
    if kind == contracts.KIND_PAYOUT:
        return PAYOUT
    if own_transfer:
        return OWN_TRANSFER
    return category_of_reference(reference)


def is_spending(category: str) -> bool:
    """Money that left the user (moving it between their own accounts is not)."""
    return category != OWN_TRANSFER


# -- flows ------------------------------------------------------------------------

IN = "in"
OUT = "out"
KINDS = (contracts.KIND_DEPOSIT, contracts.KIND_INTERNAL, contracts.KIND_PAYOUT)


@dataclass(frozen=True)
class CompletedTransfer:
    """What analytics needs from a transfer_completed payload."""

    transfer_id: str
    kind: str
    owner_id: str
    amount: int  # minor units, positive
    currency: str
    to_owner_id: str | None = None
    reference: str | None = None
    from_account_id: str | None = None
    to_account_id: str | None = None
    beneficiary_iban: str | None = None


@dataclass(frozen=True)
class Flow:
    """Money in or out for one user, from one transfer."""

    user_id: str
    direction: str  # IN | OUT
    amount: int
    currency: str
    category: str
    counterparty: str | None  # "account:<id>" or "iban:<IBAN>", for recurring payments
    reference: str | None


def flows(transfer: CompletedTransfer) -> list[Flow]:
    """deposit: inflow for the owner; internal: outflow for the owner and
    inflow for the receiving owner; payout: outflow for the owner."""
    t = transfer
    if t.kind == contracts.KIND_DEPOSIT:
        return [Flow(t.owner_id, IN, t.amount, t.currency, TOP_UP, None, t.reference)]
    if t.kind == contracts.KIND_PAYOUT:
        payee = f"iban:{t.beneficiary_iban}" if t.beneficiary_iban else None
        return [Flow(t.owner_id, OUT, t.amount, t.currency, PAYOUT, payee, t.reference)]
    if t.kind != contracts.KIND_INTERNAL:
        raise ValueError(f"unknown transfer kind {t.kind!r}")
    category = categorize(t.kind, t.reference, own_transfer=t.owner_id == t.to_owner_id)
    payee = f"account:{t.to_account_id}" if t.to_account_id else None
    payer = f"account:{t.from_account_id}" if t.from_account_id else None
    result = [Flow(t.owner_id, OUT, t.amount, t.currency, category, payee, t.reference)]
    if t.to_owner_id:
        result.append(Flow(t.to_owner_id, IN, t.amount, t.currency, category, payer, t.reference))
    return result


@dataclass(frozen=True)
class Contribution:
    """What one transfer adds to one user's month: one transfer counted once,
    even when it is both an inflow and an outflow (own accounts)."""

    user_id: str
    currency: str
    category: str
    inflow: int
    outflow: int
    count: int = 1


def contributions(items: Iterable[Flow]) -> list[Contribution]:
    totals: dict[tuple[str, str, str], list[int]] = {}
    for flow in items:
        key = (flow.user_id, flow.currency, flow.category)
        inflow_outflow = totals.setdefault(key, [0, 0])
        inflow_outflow[0 if flow.direction == IN else 1] += flow.amount
    return [
        Contribution(user, currency, category, inflow, outflow)
        for (user, currency, category), (inflow, outflow) in totals.items()
    ]


# -- anomalies --------------------------------------------------------------------


@dataclass(frozen=True)
class AnomalySettings:
    threshold: float = 3.5  # flag above this robust z-score
    min_history: int = 5  # earlier outflows needed before judging
    history: int = 100  # at most this many earlier outflows (the newest)
    # The spread never counts as less than this share of the median, so a
    # history of identical amounts (MAD 0) flags real jumps, not every cent.
    min_spread_percent: int = 10

    @classmethod
    def from_env(cls) -> "AnomalySettings":
        """ANALYTICS_ANOMALY_THRESHOLD (3.5), ANALYTICS_ANOMALY_MIN_HISTORY (5),
        ANALYTICS_ANOMALY_HISTORY (100), ANALYTICS_ANOMALY_MIN_SPREAD_PERCENT (10)."""
        defaults = cls()
        raw = config.env_str("ANALYTICS_ANOMALY_THRESHOLD")
        threshold = defaults.threshold
        if raw is not None:
            try:
                threshold = float(raw)
            except ValueError:
                raise config.ConfigError(
                    f"ANALYTICS_ANOMALY_THRESHOLD must be a number, got {raw!r}"
                ) from None
            if not threshold > 0:
                raise config.ConfigError("ANALYTICS_ANOMALY_THRESHOLD must be above 0")
        return cls(
            threshold=threshold,
            min_history=config.env_int(
                "ANALYTICS_ANOMALY_MIN_HISTORY", defaults.min_history, minimum=1
            ),
            history=config.env_int("ANALYTICS_ANOMALY_HISTORY", defaults.history, minimum=1),
            min_spread_percent=config.env_int(
                "ANALYTICS_ANOMALY_MIN_SPREAD_PERCENT", defaults.min_spread_percent, minimum=0
            ),
        )


@dataclass(frozen=True)
class Anomaly:
    score: float  # rounded to 2 decimals
    median: int  # minor units, rounded
    reason: str


def _round_minor(value: float) -> int:
    return int(Decimal(repr(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _ratio_text(amount: int, middle: float) -> str:
    ratio = amount / middle
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def detect_anomaly(
    amount: int, currency: str, history: Sequence[int], settings: AnomalySettings
) -> Anomaly | None:
    """Flag an outflow far above the user's earlier ones in this currency.

    `history` is the earlier outflows, oldest first; only the newest
    `settings.history` count, and fewer than `settings.min_history` judge
    nothing. Only unusually large amounts are flagged.
    """
    recent = list(history)[-settings.history :]
    if len(recent) < settings.min_history:
        return None
    result = robust_score(amount, recent, settings.min_spread_percent)
    if result.score <= settings.threshold:
        return None
    usual = _round_minor(result.median)
    reason = (
        f"amount {_ratio_text(amount, result.median)} your usual "
        f"{format_minor(usual, currency)} {currency} "
        f"(robust z-score {result.score:.1f} over your last {len(recent)} payments)"
    )
    return Anomaly(round(result.score, 2), usual, reason)


# -- insights ---------------------------------------------------------------------

SPENDING_CHANGE = "spending_change"
LARGEST_OUTFLOW = "largest_outflow"
RECURRING_PAYMENT = "recurring_payment"


@dataclass(frozen=True)
class Insight:
    kind: str
    message: str
    data: Mapping = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "data": dict(self.data)}


@dataclass(frozen=True)
class Outflow:
    """One spending outflow of a user (own-account moves excluded)."""

    transfer_id: str
    month: str
    amount: int
    currency: str
    category: str
    reference: str | None = None
    counterparty: str | None = None
    position: int = 0  # the order in which analytics saw it


@dataclass(frozen=True)
class InsightSettings:
    spending_change_percent: int = 20  # report a change of at least this much
    recurring_months: int = 3  # distinct months a payment must be seen in
    recurring_tolerance_percent: int = 20  # "similar": within this much of the typical amount
    recurring_lookback_months: int = 12  # months considered, the current one included


def _percent(change: int, base: int) -> int:
    """round(change * 100 / base), halves away from zero, in integers."""
    sign = -1 if change < 0 else 1
    return sign * ((abs(change) * 200 + base) // (2 * base))


def spending_change(
    month: str, currency: str, current: int, previous: int, settings: InsightSettings
) -> Insight | None:
    """Only when both months have spending and it changed by the threshold or more."""
    if current <= 0 or previous <= 0:
        return None
    change = current - previous
    if abs(change) * 100 < settings.spending_change_percent * previous:
        return None
    percent = _percent(change, previous)
    last = previous_month(month)
    direction = "up" if change > 0 else "down"
    return Insight(
        SPENDING_CHANGE,
        f"Spending is {direction} {abs(percent)}% on {month_name(last)} "
        f"({format_minor(current, currency)} {currency} against "
        f"{format_minor(previous, currency)} {currency})",
        {
            "currency": currency,
            "month": month,
            "previous_month": last,
            "spending": format_minor(current, currency),
            "previous_spending": format_minor(previous, currency),
            "change_percent": percent,
        },
    )


def largest_outflows(month: str, outflows: Iterable[Outflow]) -> list[Insight]:
    """The largest outflow of the month, per currency (the first seen on a tie)."""
    largest: dict[str, Outflow] = {}
    for item in sorted(outflows, key=lambda o: o.position):
        if item.month != month:
            continue
        best = largest.get(item.currency)
        if best is None or item.amount > best.amount:
            largest[item.currency] = item
    insights = []
    for currency in sorted(largest):
        item = largest[currency]
        label = f" ({item.reference})" if item.reference else ""
        insights.append(
            Insight(
                LARGEST_OUTFLOW,
                f"Your largest payment in {month_name(month)} was "
                f"{format_minor(item.amount, currency)} {currency}{label}",
                {
                    "month": month,
                    "transfer_id": item.transfer_id,
                    "amount": format_minor(item.amount, currency),
                    "currency": currency,
                    "category": item.category,
                    "reference": item.reference,
                },
            )
        )
    return insights


# Words that change from one month's payment to the next ("Rent May 2026").
_CALENDAR_WORDS = frozenset(
    [name.lower() for name in MONTH_NAMES]
    + [name[:3].lower() for name in MONTH_NAMES]
    + ["sept", "month", "monthly"]
)


def reference_key(reference: str | None) -> str:
    """A reference without its numbers and month names: "Rent 05/2026" -> "rent"."""
    return " ".join(w for w in words(reference) if not w.isdigit() and w not in _CALENDAR_WORDS)


def _similar(amounts: Sequence[int], tolerance_percent: int) -> tuple[int, list[bool]]:
    typical = _round_minor(float(statistics.median(amounts)))
    allowed = typical * tolerance_percent / 100
    return typical, [abs(a - typical) <= allowed for a in amounts]


def recurring_payments(outflows: Iterable[Outflow], settings: InsightSettings) -> list[Insight]:
    """Payments to the same counterparty, or with the same reference, of
    similar amounts in at least `recurring_months` distinct months."""
    items = sorted(outflows, key=lambda o: o.position)
    groups: dict[tuple[int, str, str], list[Outflow]] = defaultdict(list)
    for item in items:
        if item.counterparty:
            groups[(0, item.currency, item.counterparty)].append(item)
        key = reference_key(item.reference)
        if key:
            groups[(1, item.currency, key)].append(item)
    candidates = []
    for group_key, members in groups.items():
        typical, similar = _similar(
            [m.amount for m in members], settings.recurring_tolerance_percent
        )
        kept = [m for m, ok in zip(members, similar, strict=True) if ok]
        months = sorted({m.month for m in kept})
        if len(months) >= settings.recurring_months:
            candidates.append((group_key, typical, kept, months))
    # Most payments first; the counterparty before the reference on a tie.
    candidates.sort(key=lambda c: (-len(c[2]), c[0]))
    covered: set[str] = set()
    insights = []
    for (by_reference, currency, key), typical, kept, months in candidates:
        ids = {m.transfer_id for m in kept}
        if ids <= covered:
            continue  # the same payments, found by the other key
        covered |= ids
        last = kept[-1]
        label = last.reference or ("the same payee" if not by_reference else key)
        insights.append(
            Insight(
                RECURRING_PAYMENT,
                f"Recurring payment: {label}, about {format_minor(typical, currency)} "
                f"{currency} a month (seen in {len(months)} months)",
                {
                    "currency": currency,
                    "typical_amount": format_minor(typical, currency),
                    "months": months,
                    "count": len(kept),
                    "category": last.category,
                    "reference": last.reference,
                    "counterparty": None if by_reference else key,
                    "matched_by": "reference" if by_reference else "counterparty",
                    "last_transfer_id": last.transfer_id,
                },
            )
        )
    return insights


def insights(
    month: str,
    spending: Mapping[tuple[str, str], int],
    outflows: Iterable[Outflow],
    settings: InsightSettings | None = None,
) -> list[Insight]:
    """Every insight for a user's `month`.

    `spending` maps (month, currency) to that month's spending (outflows
    without own-account moves) for `month` and the month before; `outflows`
    are the user's spending outflows over the lookback window.
    """
    settings = settings or InsightSettings()
    outflows = list(outflows)
    last = previous_month(month)
    result = []
    for currency in sorted({c for m, c in spending if m == month}):
        found = spending_change(
            month, currency, spending.get((month, currency), 0), spending.get((last, currency), 0),
            settings,
        )  # fmt: skip
        if found is not None:
            result.append(found)
    result.extend(largest_outflows(month, outflows))
    result.extend(recurring_payments(outflows, settings))
    return result
