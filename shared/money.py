"""Money as integer minor units plus an ISO 4217 code; decimal strings on the wire.

Standard library only. Floats never enter: amounts are parsed from strings
with Decimal and kept as int minor units from then on.
"""

import re
from dataclasses import dataclass
from decimal import Decimal

from shared.errors import InvalidInput

# ISO 4217 code -> minor unit digits, for the currencies the platform supports.
CURRENCY_DIGITS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "ILS": 2,
    "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2,
    "NOK": 2, "NZD": 2, "OMR": 3, "PLN": 2, "RON": 2, "SEK": 2, "SGD": 2,
    "TND": 3, "TRY": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

_AMOUNT = re.compile(r"^(?P<int>0|[1-9][0-9]{0,17})(?:\.(?P<frac>[0-9]+))?$")
# The largest single amount, in minor units: far above any real payment, and
# far enough below 2**63 that a balance adding many of them still fits the
# 64-bit columns.
MAX_MINOR_UNITS = 10**15


def minor_digits(currency: str) -> int:
    try:
        return CURRENCY_DIGITS[currency]
    except KeyError:
        raise InvalidInput(
            "unsupported_currency",
            f"Currency {currency!r} is not supported",
            {"currency": [f"Must be one of: {', '.join(sorted(CURRENCY_DIGITS))}."]},
        ) from None


def is_supported_currency(currency: str) -> bool:
    return currency in CURRENCY_DIGITS


@dataclass(frozen=True)
class Money:
    minor_units: int
    currency: str

    @classmethod
    def parse(cls, amount: str, currency: str, field: str = "amount") -> "Money":
        """A positive amount from its decimal string ("12.34")."""
        digits = minor_digits(currency)
        if not isinstance(amount, str):
            raise _invalid(field, 'Must be a decimal string such as "12.34", not a number.')
        match = _AMOUNT.match(amount)
        if not match:
            raise _invalid(field, 'Must be a decimal string such as "12.34".')
        fraction = match["frac"] or ""
        if len(fraction) > digits:
            raise _invalid(field, f"{currency} allows at most {digits} decimal places.")
        minor = int(match["int"]) * 10**digits + int(fraction.ljust(digits, "0") or 0)
        if minor <= 0:
            raise _invalid(field, "Must be greater than zero.")
        if minor > MAX_MINOR_UNITS:
            raise _invalid(field, "Too large.")
        return cls(minor, currency)

    def format(self) -> str:
        return format_minor(self.minor_units, self.currency)


def format_minor(minor_units: int, currency: str) -> str:
    """The decimal string of a (possibly negative) amount in minor units."""
    digits = minor_digits(currency)
    return f"{Decimal(minor_units).scaleb(-digits):.{digits}f}"


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput("invalid_amount", message, {field: [message]})
