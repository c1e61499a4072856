"""IBAN validation (ISO 13616): format and the mod-97 check digits. Stdlib only.

The per-country length is not checked: the shape and check digits catch
typos; whether an account exists is the bank's (or provider's) call.
"""

import re

_FORMAT = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")


def normalise(raw: str) -> str:
    """Without spaces, upper case: the form compared and sent on."""
    return "".join(raw.split()).upper()


def _mod97(text: str) -> int:
    return int("".join(str(int(char, 36)) for char in text)) % 97


def is_valid(raw: str) -> bool:
    iban = normalise(raw)
    return bool(_FORMAT.match(iban)) and _mod97(iban[4:] + iban[:4]) == 1


def check_digits(country: str, bban: str) -> str:
    """The two check digits that make country + digits + bban a valid IBAN."""
    return f"{98 - _mod97((bban + country + '00').upper()):02d}"
