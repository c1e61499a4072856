"""Risk rules and scoring, as pure functions over plain values.

Standard library only (shared.money and shared.robust are too).

The rules are data: a RuleSet is one immutable, numbered version of every
threshold and weight, kept in risk's database and replaced by an admin
without a deploy (`RuleSet.from_document` reads the JSON an admin sends;
`to_document` writes it back). Version 0 is the built-in default below,
in force until the first version is stored.

A transfer is judged on Facts gathered from risk's own tables: its amount,
the customer's tier, the age of the source account, the account's hourly
and daily velocity, whether the beneficiary was ever paid before, the
customer's own history of outflows (the usual hours of day and the usual
amounts) and their recent failed logins. Every rule that fires adds its
weight to the score (capped at 100) and names a reason; the score then
decides: at or above `reject_score` reject, at or above `review_score`
hold for an admin's review, below approve.

Money in a document is a decimal string in the currency's minor digits,
as everywhere in the API; in a RuleSet it is integer minor units.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType

from shared import contracts
from shared.errors import InvalidInput
from shared.money import CURRENCY_DIGITS, Money, format_minor
from shared.robust import robust_score

# -- reasons and their default weights ----------------------------------------

AMOUNT_OVER_LIMIT = "amount_over_limit"
NEW_ACCOUNT_LIMIT = "new_account_limit"  # over a young account's lower limit
HOURLY_COUNT_EXCEEDED = "hourly_count_exceeded"
HOURLY_AMOUNT_EXCEEDED = "hourly_amount_exceeded"
DAILY_COUNT_EXCEEDED = "daily_count_exceeded"
DAILY_AMOUNT_EXCEEDED = "daily_amount_exceeded"
LARGE_AMOUNT = "large_amount"  # above a share of the limit that applies, within it
NEW_ACCOUNT = "new_account"  # a young account, within its lower limit
NEW_BENEFICIARY = "new_beneficiary"  # never paid before by this customer
UNUSUAL_HOUR = "unusual_hour"  # an hour of day the customer rarely sends money
AMOUNT_SPIKE = "amount_spike"  # far above the customer's usual amounts
FAILED_LOGINS = "failed_logins"  # repeated failed logins recently
# Added to a held transfer's reasons when its review ran out of time.
REVIEW_EXPIRED = "review_expired"

# A hard limit alone reaches the reject score; soft signals add up: a young
# account sending most of its limit to someone new (10 + 30 + 10) is held
# for review, a small first payment from it (10 + 10) is not.
DEFAULT_WEIGHTS: Mapping[str, int] = MappingProxyType(
    {
        AMOUNT_OVER_LIMIT: 100,
        NEW_ACCOUNT_LIMIT: 80,
        DAILY_COUNT_EXCEEDED: 70,
        DAILY_AMOUNT_EXCEEDED: 70,
        HOURLY_AMOUNT_EXCEEDED: 30,
        FAILED_LOGINS: 35,
        LARGE_AMOUNT: 30,
        AMOUNT_SPIKE: 30,
        HOURLY_COUNT_EXCEEDED: 25,
        UNUSUAL_HOUR: 15,
        NEW_ACCOUNT: 10,
        NEW_BENEFICIARY: 10,
    }
)
REASONS = frozenset(DEFAULT_WEIGHTS)
MAX_SCORE = 100

# Deposits come from outside through the card provider; only money leaving
# an account is assessed.
ASSESSED_KINDS = frozenset({contracts.KIND_INTERNAL, contracts.KIND_PAYOUT})

DEFAULT_TIER = "standard"

# Per-transfer limits of the default tier in whole units: roughly EUR 10,000
# in each supported currency, rounded. Hourly amounts default to 150% of
# this, daily amounts to 300%.
DEFAULT_TRANSFER_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "EUR": 10_000, "USD": 10_000, "GBP": 8_500, "CHF": 10_000,
        "AUD": 15_000, "BHD": 4_000, "BRL": 60_000, "CAD": 15_000,
        "CLP": 10_000_000, "CNY": 75_000, "CZK": 250_000, "DKK": 75_000,
        "HKD": 85_000, "HUF": 4_000_000, "ILS": 40_000, "INR": 900_000,
        "ISK": 1_500_000, "JOD": 7_500, "JPY": 1_500_000, "KRW": 15_000_000,
        "KWD": 3_000, "MXN": 200_000, "NOK": 115_000, "NZD": 18_000,
        "OMR": 4_000, "PLN": 40_000, "RON": 50_000, "SEK": 115_000,
        "SGD": 15_000, "TND": 30_000, "TRY": 400_000, "ZAR": 200_000,
    }
)  # fmt: skip


def to_minor(whole_units: int, currency: str) -> int:
    """Whole units of a currency in its minor units."""
    return whole_units * 10 ** CURRENCY_DIGITS[currency]


class RuleError(ValueError):
    """A rule set document that cannot be used; `errors` names the fields."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{key}: {' '.join(msgs)}" for key, msgs in errors.items()))
        self.errors = errors


# -- the rule set ----------------------------------------------------------------


@dataclass(frozen=True)
class CurrencyLimits:
    """One tier's amounts in one currency, in minor units."""

    per_transfer: int
    hourly_amount: int
    daily_amount: int


@dataclass(frozen=True)
class Tier:
    hourly_count: int  # transfers per source account per hour, this one included
    daily_count: int  # and per 24 hours
    currencies: Mapping[str, CurrencyLimits]


def _default_tiers() -> Mapping[str, Tier]:
    currencies = {
        currency: CurrencyLimits(
            per_transfer=to_minor(whole, currency),
            hourly_amount=to_minor(whole, currency) * 3 // 2,
            daily_amount=to_minor(whole, currency) * 3,
        )
        for currency, whole in DEFAULT_TRANSFER_LIMITS.items()
    }
    standard = Tier(hourly_count=5, daily_count=10, currencies=MappingProxyType(currencies))
    return MappingProxyType({DEFAULT_TIER: standard})


@dataclass(frozen=True)
class RuleSet:
    """Every threshold and weight of one version of the rules."""

    version: int = 0
    review_score: int = 50
    reject_score: int = 70
    review_seconds: int = 24 * 3600  # an undecided review is rejected after this
    weights: Mapping[str, int] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    default_tier: str = DEFAULT_TIER
    tiers: Mapping[str, Tier] = field(default_factory=_default_tiers)
    new_account_hours: int = 24  # an account younger than this is new
    new_account_limit_percent: int = 10  # a new account's per-transfer limit, % of normal
    large_amount_percent: int = 50  # large_amount above this % of the applicable limit
    unusual_hour_min_history: int = 10  # earlier outflows needed to know usual hours
    unusual_hour_max_share_percent: int = 5  # unusual: this hour +-1 holds less of the history
    spike_min_history: int = 5  # earlier outflows (same currency) needed to judge amounts
    spike_threshold: float = 3.5  # robust z-score at or above which an amount spikes
    spike_min_spread_percent: int = 10  # see shared.robust
    # Pocket money never spikes: below this % of the per-transfer limit
    # (EUR 100 by default) an amount is not judged against the history.
    spike_min_limit_percent: int = 1
    history_size: int = 100  # the newest earlier outflows considered
    failed_logins_hours: int = 24
    failed_logins_threshold: int = 3  # this many failed logins in the window raise risk

    def tier(self, name: str | None) -> Tier:
        """A customer's tier; one unknown to this version gets the default."""
        return self.tiers.get(name or self.default_tier) or self.tiers[self.default_tier]

    def tier_name(self, name: str | None) -> str:
        return name if name in self.tiers else self.default_tier

    def limits(self, tier: str | None, currency: str) -> CurrencyLimits:
        """A tier's amounts in a currency; a currency the tier does not set
        falls back to the default tier, which sets every currency."""
        own = self.tier(tier).currencies.get(currency)
        return own or self.tiers[self.default_tier].currencies[currency]

    # -- documents: what admins read and write ---------------------------------

    def to_document(self) -> dict:
        return {
            "review_score": self.review_score,
            "reject_score": self.reject_score,
            "review_seconds": self.review_seconds,
            "weights": dict(self.weights),
            "default_tier": self.default_tier,
            "tiers": {
                name: {
                    "hourly_count": tier.hourly_count,
                    "daily_count": tier.daily_count,
                    "currencies": {
                        currency: {
                            "per_transfer": format_minor(limits.per_transfer, currency),
                            "hourly_amount": format_minor(limits.hourly_amount, currency),
                            "daily_amount": format_minor(limits.daily_amount, currency),
                        }
                        for currency, limits in sorted(tier.currencies.items())
                    },
                }
                for name, tier in sorted(self.tiers.items())
            },
            "new_account": {
                "hours": self.new_account_hours,
                "limit_percent": self.new_account_limit_percent,
            },
            "large_amount_percent": self.large_amount_percent,
            "unusual_hour": {
                "min_history": self.unusual_hour_min_history,
                "max_share_percent": self.unusual_hour_max_share_percent,
            },
            "amount_spike": {
                "min_history": self.spike_min_history,
                "threshold": self.spike_threshold,
                "min_spread_percent": self.spike_min_spread_percent,
                "min_limit_percent": self.spike_min_limit_percent,
            },
            "history_size": self.history_size,
            "failed_logins": {
                "hours": self.failed_logins_hours,
                "threshold": self.failed_logins_threshold,
            },
        }

    @classmethod
    def from_document(cls, document: Mapping, version: int) -> "RuleSet":
        """A RuleSet from a document whose shape and ranges are already
        checked (services.risk.schemas.RuleSetDocument). Checks what needs
        the whole: amounts in each currency's digits, the default tier
        covering every currency, review below reject. Raises RuleError."""
        errors: dict[str, list[str]] = {}
        tiers = {}
        for name, tier in document["tiers"].items():
            currencies = {}
            for currency, amounts in tier["currencies"].items():
                parsed = {}
                for key in ("per_transfer", "hourly_amount", "daily_amount"):
                    where = f"tiers.{name}.currencies.{currency}.{key}"
                    try:
                        parsed[key] = Money.parse(amounts[key], currency).minor_units
                    except InvalidInput as exc:
                        errors[where] = [exc.detail]
                if len(parsed) == 3:
                    currencies[currency] = CurrencyLimits(**parsed)
            tiers[name] = Tier(
                hourly_count=tier["hourly_count"],
                daily_count=tier["daily_count"],
                currencies=MappingProxyType(currencies),
            )
        default_tier = document["default_tier"]
        if default_tier not in tiers:
            errors["default_tier"] = [f"No tier named {default_tier!r} in tiers."]
        else:
            missing = sorted(
                set(CURRENCY_DIGITS) - set(document["tiers"][default_tier]["currencies"])
            )
            if missing:
                errors[f"tiers.{default_tier}.currencies"] = [
                    "The default tier must set limits for every supported currency; "
                    f"missing: {', '.join(missing)}."
                ]
        if document["review_score"] > document["reject_score"]:
            errors["review_score"] = ["Must not be above reject_score."]
        unknown = sorted(set(document["weights"]) - REASONS)
        if unknown:
            errors["weights"] = [f"Unknown reasons: {', '.join(unknown)}."]
        if errors:
            raise RuleError(errors)
        return cls(
            version=version,
            review_score=document["review_score"],
            reject_score=document["reject_score"],
            review_seconds=document["review_seconds"],
            weights=MappingProxyType({**DEFAULT_WEIGHTS, **document["weights"]}),
            default_tier=default_tier,
            tiers=MappingProxyType(tiers),
            new_account_hours=document["new_account"]["hours"],
            new_account_limit_percent=document["new_account"]["limit_percent"],
            large_amount_percent=document["large_amount_percent"],
            unusual_hour_min_history=document["unusual_hour"]["min_history"],
            unusual_hour_max_share_percent=document["unusual_hour"]["max_share_percent"],
            spike_min_history=document["amount_spike"]["min_history"],
            spike_threshold=float(document["amount_spike"]["threshold"]),
            spike_min_spread_percent=document["amount_spike"]["min_spread_percent"],
            spike_min_limit_percent=document["amount_spike"]["min_limit_percent"],
            history_size=document["history_size"],
            failed_logins_hours=document["failed_logins"]["hours"],
            failed_logins_threshold=document["failed_logins"]["threshold"],
        )

    def with_version(self, version: int) -> "RuleSet":
        return replace(self, version=version)


def _merged(defaults: Mapping, stored: Mapping) -> dict:
    """Every key of `defaults`, taking the stored value where there is one;
    nested sections merge key by key, maps of names (tiers, weights) whole."""
    merged = {}
    for key, default in defaults.items():
        value = stored.get(key, default) if isinstance(stored, Mapping) else default
        if isinstance(default, Mapping) and key not in ("tiers", "weights", "currencies"):
            value = _merged(default, value if isinstance(value, Mapping) else {})
        merged[key] = value
    return merged


def upgrade_document(stored: Mapping) -> dict:
    """A document stored by an earlier release, readable by this one.

    Sections and fields it lacks take the built-in defaults; currencies no
    longer supported are dropped; the default tier gains, at the built-in
    amounts, any supported currency it lacks (it must set them all). What
    the admin set is kept as it was."""
    defaults = RuleSet().to_document()
    document = _merged(defaults, stored)
    tiers = {}
    for name, tier in (document.get("tiers") or {}).items():
        if not isinstance(tier, Mapping):
            continue
        currencies = tier.get("currencies") if isinstance(tier.get("currencies"), Mapping) else {}
        tiers[name] = {
            **tier,
            "currencies": {c: v for c, v in currencies.items() if c in CURRENCY_DIGITS},
        }
    own = tiers.get(document["default_tier"])
    if own is not None:
        built_in = defaults["tiers"][DEFAULT_TIER]["currencies"]
        own["currencies"] = {**built_in, **own["currencies"]}
    document["tiers"] = tiers
    return document


# -- what a transfer is judged on -------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The source account's transfers in a window, before this one (those
    approved, and those held for review: either may still move money)."""

    count: int = 0
    total: int = 0  # minor units, in the account's currency


@dataclass(frozen=True)
class Facts:
    amount: int  # minor units
    currency: str
    tier: str | None = None  # the customer's tier; None: the default
    account_opened_at: datetime | None = None  # None: unknown, not treated as new
    last_hour: Window = Window()
    last_day: Window = Window()
    new_beneficiary: bool = False
    # The customer's earlier approved outflows, newest first: amounts in this
    # currency, and the UTC hour of day of each (any currency).
    history_amounts: Sequence[int] = ()
    history_hours: Sequence[int] = ()
    failed_logins: int = 0  # within the rule set's window


@dataclass(frozen=True)
class Decision:
    decision: str  # contracts.APPROVE | REVIEW | REJECT
    score: int
    reasons: tuple[str, ...] = ()
    signals: Mapping = field(default_factory=dict)  # the figures behind the reasons

    @property
    def approved(self) -> bool:
        return self.decision == contracts.APPROVE


def is_assessed(kind: str) -> bool:
    return kind in ASSESSED_KINDS


def is_new_account(opened_at: datetime | None, now: datetime, rules: RuleSet) -> bool:
    return opened_at is not None and now - opened_at < timedelta(hours=rules.new_account_hours)


def applicable_limit(limits: CurrencyLimits, new_account: bool, rules: RuleSet) -> int:
    if new_account:
        return limits.per_transfer * rules.new_account_limit_percent // 100
    return limits.per_transfer


# -- the rules: each returns the reasons it raises --------------------------------


def limit_rules(amount: int, limits: CurrencyLimits, new_account: bool, rules: RuleSet) -> list:
    reasons = []
    if amount > limits.per_transfer:
        reasons.append(AMOUNT_OVER_LIMIT)
    if new_account:
        over = amount > applicable_limit(limits, True, rules)
        reasons.append(NEW_ACCOUNT_LIMIT if over else NEW_ACCOUNT)
    limit = applicable_limit(limits, new_account, rules)
    if limit * rules.large_amount_percent // 100 < amount <= limit:
        reasons.append(LARGE_AMOUNT)
    return reasons


def velocity_rules(facts: Facts, tier: Tier, limits: CurrencyLimits) -> list[str]:
    """Counts include the transfer being assessed; so do amounts."""
    reasons = []
    if facts.last_hour.count + 1 > tier.hourly_count:
        reasons.append(HOURLY_COUNT_EXCEEDED)
    if facts.last_hour.total + facts.amount > limits.hourly_amount:
        reasons.append(HOURLY_AMOUNT_EXCEEDED)
    if facts.last_day.count + 1 > tier.daily_count:
        reasons.append(DAILY_COUNT_EXCEEDED)
    if facts.last_day.total + facts.amount > limits.daily_amount:
        reasons.append(DAILY_AMOUNT_EXCEEDED)
    return reasons


# Hours from `hour` (mod 24) that are within an hour of it: the same hour,
# the next, the one before.
_WITHIN_AN_HOUR = frozenset((0, 1, 23))


def hour_share_percent(hour: int, history_hours: Sequence[int]) -> float:
    """The share of the history within an hour of `hour` (on the 24-hour clock)."""
    near = sum(1 for h in history_hours if (h - hour) % 24 in _WITHIN_AN_HOUR)
    return 100 * near / len(history_hours)


def unusual_hour_rule(now: datetime, facts: Facts, rules: RuleSet) -> tuple[list, float | None]:
    if len(facts.history_hours) < rules.unusual_hour_min_history:
        return [], None
    share = hour_share_percent(now.hour, facts.history_hours)
    return ([UNUSUAL_HOUR] if share < rules.unusual_hour_max_share_percent else []), share


def amount_spike_rule(
    facts: Facts, limits: CurrencyLimits, rules: RuleSet
) -> tuple[list, dict | None]:
    history = facts.history_amounts
    if len(history) < rules.spike_min_history:
        return [], None
    if facts.amount < limits.per_transfer * rules.spike_min_limit_percent // 100:
        return [], None
    result = robust_score(facts.amount, history, rules.spike_min_spread_percent)
    figures = {
        "median": format_minor(round(result.median), facts.currency),
        "mad": format_minor(round(result.mad), facts.currency),
        "z": round(result.score, 2),
    }
    return ([AMOUNT_SPIKE] if result.score >= rules.spike_threshold else []), figures


def score(reasons: Sequence[str], rules: RuleSet) -> int:
    return min(MAX_SCORE, sum(rules.weights.get(reason, 0) for reason in reasons))


def decide(points: int, rules: RuleSet) -> str:
    if points >= rules.reject_score:
        return contracts.REJECT
    if points >= rules.review_score:
        return contracts.REVIEW
    return contracts.APPROVE


def assess(facts: Facts, now: datetime, rules: RuleSet) -> Decision:
    """Run every rule over one transfer and decide."""
    tier = rules.tier(facts.tier)
    limits = rules.limits(facts.tier, facts.currency)
    new_account = is_new_account(facts.account_opened_at, now, rules)
    hour_reasons, hour_share = unusual_hour_rule(now, facts, rules)
    spike_reasons, spike = amount_spike_rule(facts, limits, rules)
    reasons = [
        *limit_rules(facts.amount, limits, new_account, rules),
        *velocity_rules(facts, tier, limits),
        *([NEW_BENEFICIARY] if facts.new_beneficiary else []),
        *hour_reasons,
        *spike_reasons,
        *([FAILED_LOGINS] if facts.failed_logins >= rules.failed_logins_threshold else []),
    ]
    points = score(reasons, rules)

    def money(minor: int) -> str:
        return format_minor(minor, facts.currency)

    # The figures behind the reasons, for whoever reviews them (money as
    # decimal strings, as in the API).
    signals = {
        "tier": rules.tier_name(facts.tier),
        "rules_version": rules.version,
        "per_transfer_limit": money(applicable_limit(limits, new_account, rules)),
        "new_account": new_account,
        "last_hour": {"count": facts.last_hour.count, "amount": money(facts.last_hour.total)},
        "last_day": {"count": facts.last_day.count, "amount": money(facts.last_day.total)},
        "new_beneficiary": facts.new_beneficiary,
        "hour_share_percent": None if hour_share is None else round(hour_share, 1),
        "amount_spike": spike,
        "failed_logins": facts.failed_logins,
    }
    return Decision(decide(points, rules), points, tuple(reasons), signals)
