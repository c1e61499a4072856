"""IBAN validation (ISO 13616): format and the mod-97 check digits. Stdlib only."""

import re

_FORMAT = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")


def normalise(raw: str) -> str:
    return "".join(raw.split()).upper()


def is_valid(raw: str) -> bool:
    iban = normalise(raw)
    if not _FORMAT.match(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1
