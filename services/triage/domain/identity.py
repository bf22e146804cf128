"""A person's identity: the NHS number check digit, the name key a match is made on, and age."""

from __future__ import annotations

import re
import unicodedata
from datetime import date

# --- identity ----------------------------------------------------------------------------------

_NHS_DIGITS = re.compile(r"[0-9]{10}")


def nhs_number_valid(value: str) -> bool:
    """NHS number: 10 digits (spaces and hyphens ignored) whose last is the modulus 11 check digit
    of the first nine (weights 10 down to 2; 11 → 0; 10 means no valid number has these nine)."""
    digits = value.replace(" ", "").replace("-", "")
    if not _NHS_DIGITS.fullmatch(digits):  # ASCII only: str.isdigit would admit other scripts
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def normalise_nhs_number(value: str) -> str:
    """The 10 digits of a valid NHS number, or ValueError."""
    if not nhs_number_valid(value):
        raise ValueError("not a valid NHS number (10 digits with a modulus 11 check digit)")
    return value.replace(" ", "").replace("-", "")


def _letters(value: str) -> str:
    # Casefold first (ß → ss), then NFKD splits accents into combining marks, which are not letters.
    return "".join(ch for ch in unicodedata.normalize("NFKD", value.casefold()) if ch.isalpha())


def name_key(given: str, family: str) -> str:
    """A matching key for names typed differently ('Zoë O'Brien' = 'zoe obrien'): used to flag
    possible duplicates for a person, never to merge them."""
    return f"{_letters(family)}|{_letters(given)}"


def age_on(birth: date, day: date) -> int:
    """Completed years on `day`. Someone born on 29 February turns a year older on 1 March in a
    common year (their birthday has not been reached on 28 February)."""
    if day < birth:
        raise ValueError("the day is before the date of birth")
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
