"""Risk rules and scoring, as pure functions over plain values.

Standard library only (shared.config and shared.money are too). A transfer
is judged on its amount and currency, the age of its source account, and
that account's velocity: the transfers risk approved from it in the last
24 hours. Every rule that fires adds a score and a reason code; the sum is
capped at 100, and a score at or above the reject threshold rejects.
"Review" is reserved for later: today every decision is approve or reject.

Limits are configured in whole currency units (10000 means EUR 10,000.00)
and compared in minor units through the currency's ISO 4217 digits, so a
JPY limit of 1,500,000 is 1,500,000 minor units and a BHD limit of 4,000
is 4,000,000.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from shared import config, contracts
from shared.money import CURRENCY_DIGITS

# Reason codes.
AMOUNT_OVER_LIMIT = "amount_over_limit"
NEW_ACCOUNT_LIMIT = "new_account_limit"
DAILY_COUNT_EXCEEDED = "daily_count_exceeded"
DAILY_AMOUNT_EXCEEDED = "daily_amount_exceeded"
LARGE_AMOUNT = "large_amount"  # soft: above half the limit that applies
NEW_ACCOUNT = "new_account"  # soft: a young account within its lower limit

# What each reason adds to the score. A hard limit alone reaches the default
# reject threshold (70); the soft signals together do not (30 + 20).
SCORES: Mapping[str, int] = MappingProxyType(
    {
        AMOUNT_OVER_LIMIT: 100,
        NEW_ACCOUNT_LIMIT: 80,
        DAILY_COUNT_EXCEEDED: 70,
        DAILY_AMOUNT_EXCEEDED: 70,
        LARGE_AMOUNT: 30,
        NEW_ACCOUNT: 20,
    }
)
MAX_SCORE = 100

# Deposits come from outside through the card provider; only money leaving
# an account is assessed.
ASSESSED_KINDS = frozenset({contracts.KIND_INTERNAL, contracts.KIND_PAYOUT})

# Per-transfer limits in whole units: roughly EUR 10,000 in each supported
# currency, rounded. A currency missing here gets DEFAULT_TRANSFER_LIMIT
# whole units, scaled by its own minor digits.
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
DEFAULT_TRANSFER_LIMIT = 10_000


def to_minor(whole_units: int, currency: str) -> int:
    """Whole units of a currency in its minor units (2 digits if unknown)."""
    return whole_units * 10 ** CURRENCY_DIGITS.get(currency, 2)


@dataclass(frozen=True)
class RiskLimits:
    """Every threshold of the rule set; see from_env for the variables."""

    # whole units per currency
    transfer_limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_TRANSFER_LIMITS)
    default_transfer_limit: int = DEFAULT_TRANSFER_LIMIT  # whole units
    daily_count: int = 10  # transfers per source account per window, this one included
    daily_amount_percent: int = 300  # window total, as a percentage of the transfer limit
    velocity_window: timedelta = timedelta(hours=24)
    new_account_age: timedelta = timedelta(hours=24)
    new_account_limit_percent: int = 10  # a young account's limit, % of the normal one
    large_amount_percent: int = 50  # above this % of the applicable limit: large_amount
    reject_score: int = 70

    def transfer_limit(self, currency: str) -> int:
        """The per-transfer limit in minor units."""
        whole = self.transfer_limits.get(currency, self.default_transfer_limit)
        return to_minor(whole, currency)

    def new_account_limit(self, currency: str) -> int:
        return self.transfer_limit(currency) * self.new_account_limit_percent // 100

    def daily_amount_limit(self, currency: str) -> int:
        return self.transfer_limit(currency) * self.daily_amount_percent // 100

    @classmethod
    def from_env(cls) -> "RiskLimits":
        """Defaults, overridden by RISK_* environment variables:

        RISK_TRANSFER_LIMIT_<CCY>        per-transfer limit, whole units (e.g. _EUR=10000)
        RISK_TRANSFER_LIMIT_DEFAULT      for currencies without their own limit
        RISK_DAILY_COUNT                 transfers per source account per window
        RISK_DAILY_AMOUNT_PERCENT        window total, % of the per-transfer limit
        RISK_VELOCITY_WINDOW_HOURS       the velocity window
        RISK_NEW_ACCOUNT_HOURS           an account younger than this is new
        RISK_NEW_ACCOUNT_LIMIT_PERCENT   a new account's per-transfer limit, % of normal
        RISK_LARGE_AMOUNT_PERCENT        the large_amount signal, % of the applicable limit
        RISK_REJECT_SCORE                reject at or above this score (1-100)
        """
        defaults = cls()
        limits = dict(defaults.transfer_limits)
        for currency in sorted(CURRENCY_DIGITS.keys() | limits.keys()):
            name = f"RISK_TRANSFER_LIMIT_{currency}"
            if config.env_str(name) is not None:
                limits[currency] = config.env_int(name, 0, minimum=1)
        reject_score = config.env_int("RISK_REJECT_SCORE", defaults.reject_score, minimum=1)
        if reject_score > MAX_SCORE:
            raise config.ConfigError(f"RISK_REJECT_SCORE must be at most {MAX_SCORE}")
        return cls(
            transfer_limits=MappingProxyType(limits),
            default_transfer_limit=config.env_int(
                "RISK_TRANSFER_LIMIT_DEFAULT", defaults.default_transfer_limit, minimum=1
            ),
            daily_count=config.env_int("RISK_DAILY_COUNT", defaults.daily_count, minimum=1),
            daily_amount_percent=config.env_int(
                "RISK_DAILY_AMOUNT_PERCENT", defaults.daily_amount_percent, minimum=1
            ),
            velocity_window=timedelta(
                hours=config.env_int("RISK_VELOCITY_WINDOW_HOURS", 24, minimum=1)
            ),
            new_account_age=timedelta(
                hours=config.env_int("RISK_NEW_ACCOUNT_HOURS", 24, minimum=0)
            ),
            new_account_limit_percent=config.env_int(
                "RISK_NEW_ACCOUNT_LIMIT_PERCENT", defaults.new_account_limit_percent, minimum=1
            ),
            large_amount_percent=config.env_int(
                "RISK_LARGE_AMOUNT_PERCENT", defaults.large_amount_percent, minimum=1
            ),
            reject_score=reject_score,
        )


@dataclass(frozen=True)
class Velocity:
    """The source account's approved transfers in the window, before this one."""

    count: int = 0
    total: int = 0  # minor units, in the account's currency


@dataclass(frozen=True)
class Decision:
    decision: str  # contracts.APPROVE | contracts.REJECT
    score: int
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def approved(self) -> bool:
        return self.decision == contracts.APPROVE


def is_assessed(kind: str) -> bool:
    return kind in ASSESSED_KINDS


def is_new_account(opened_at: datetime | None, now: datetime, limits: RiskLimits) -> bool:
    """Younger than the new-account age. Unknown (None: opened before risk
    listened, or its event not seen yet) counts as not new."""
    return opened_at is not None and now - opened_at < limits.new_account_age


def applicable_limit(currency: str, new_account: bool, limits: RiskLimits) -> int:
    return limits.new_account_limit(currency) if new_account else limits.transfer_limit(currency)


# The rules: each returns the reason codes it raises (none, or some).


def per_transfer_limit_rule(amount: int, currency: str, limits: RiskLimits) -> list[str]:
    return [AMOUNT_OVER_LIMIT] if amount > limits.transfer_limit(currency) else []


def new_account_rule(
    amount: int, currency: str, new_account: bool, limits: RiskLimits
) -> list[str]:
    if not new_account:
        return []
    return [NEW_ACCOUNT_LIMIT] if amount > limits.new_account_limit(currency) else [NEW_ACCOUNT]


def velocity_rule(amount: int, currency: str, velocity: Velocity, limits: RiskLimits) -> list[str]:
    reasons = []
    if velocity.count + 1 > limits.daily_count:
        reasons.append(DAILY_COUNT_EXCEEDED)
    if velocity.total + amount > limits.daily_amount_limit(currency):
        reasons.append(DAILY_AMOUNT_EXCEEDED)
    return reasons


def large_amount_rule(
    amount: int, currency: str, new_account: bool, limits: RiskLimits
) -> list[str]:
    """Within the applicable limit but above the large share of it."""
    limit = applicable_limit(currency, new_account, limits)
    return [LARGE_AMOUNT] if limit * limits.large_amount_percent // 100 < amount <= limit else []


def score(reasons: list[str] | tuple[str, ...]) -> int:
    return min(MAX_SCORE, sum(SCORES[reason] for reason in reasons))


def decide(points: int, limits: RiskLimits) -> str:
    return contracts.REJECT if points >= limits.reject_score else contracts.APPROVE


def assess(
    *,
    amount: int,
    currency: str,
    account_opened_at: datetime | None,
    velocity: Velocity,
    now: datetime,
    limits: RiskLimits,
) -> Decision:
    """Run every rule over one transfer and decide."""
    new_account = is_new_account(account_opened_at, now, limits)
    reasons = [
        *per_transfer_limit_rule(amount, currency, limits),
        *new_account_rule(amount, currency, new_account, limits),
        *velocity_rule(amount, currency, velocity, limits),
        *large_amount_rule(amount, currency, new_account, limits),
    ]
    points = score(reasons)
    return Decision(decide(points, limits), points, tuple(reasons))
